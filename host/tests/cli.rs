//! `mlhost compile / run / inspect`: bad inputs give `error: ...` naming the culprit with exit
//! code 2 (never a panic), and an end-to-end run on the tiny SD-like fixture.

mod support;

use mlhost::io::{read_png, read_safetensors, write_png, write_safetensors};
use plugin_api::{NamedTensor, Tensor};
use std::path::{Path, PathBuf};
use support::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// Asserts a clean input error: exit code 2, `error:` on stderr mentioning every `needles`.
fn assert_input_error(out: &Outcome, needles: &[&str]) {
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.starts_with("error: "), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
    for needle in needles {
        assert!(out.stderr.contains(needle), "missing {needle:?} in {out:?}");
    }
}

fn mlhost_with(plugins: &TempDir) -> std::process::Command {
    let mut cmd = mlhost();
    cmd.arg("--plugin-dir").arg(plugins.path());
    cmd
}

#[test]
fn run_rejects_bad_paths_and_extensions() {
    let plugins = plugin_dir(&[RBLN_NPU]);
    let work = TempDir::new("cli");
    let w = |name: &str| work.path().join(name).display().to_string();
    let input = w("in.safetensors");
    write_safetensors(
        Path::new(&input),
        &[NamedTensor::new("z", Tensor::zeros(vec![1, 4, 2, 2]))],
    )
    .unwrap();
    let run_cmd = |model: &str, method: &str, input: &str, output: &str| {
        run(mlhost_with(&plugins).args([
            "run", model, "--method", method, "--input", input, "--output", output,
        ]))
    };

    let missing = w("no-such-model");
    let out = run_cmd(&missing, "decode", &input, &w("o.safetensors"));
    assert_input_error(&out, &[&missing, "does not exist"]);

    let model = work.path().display().to_string();
    let out = run_cmd(&model, "decode", &w("in.npy"), &w("o.safetensors"));
    assert_input_error(&out, &["in.npy", "unknown file extension"]);
    let out = run_cmd(&model, "decode", &input, &w("o.jpeg"));
    assert_input_error(&out, &["o.jpeg", "unknown file extension"]);
    let out = run_cmd(&model, "decode", &w("img.png"), &w("o.safetensors"));
    assert_input_error(&out, &["img.png", "`z`"]);
    let out = run_cmd(&model, "encode", &input, &w("o.png"));
    assert_input_error(&out, &["o.png", ".safetensors"]);
    let out = run_cmd(&model, "decode", &input, &w("nodir/o.safetensors"));
    assert_input_error(&out, &["nodir", "output directory"]);
    let out = run_cmd(
        &model,
        "decode",
        &w("absent.safetensors"),
        &w("o.safetensors"),
    );
    assert_input_error(&out, &["absent.safetensors"]);

    // The file exists but has no `x`; it names the file, the tensor and what it holds.
    let out = run_cmd(&model, "encode", &input, &w("o.safetensors"));
    assert_input_error(&out, &["in.safetensors", "no tensor `x`", "holds: z"]);

    let flat = w("flat.safetensors");
    write_safetensors(
        Path::new(&flat),
        &[NamedTensor::new("z", Tensor::zeros(vec![4, 2, 2]))],
    )
    .unwrap();
    let out = run_cmd(&model, "decode", &flat, &w("o.safetensors"));
    assert_input_error(&out, &["flat.safetensors", "[4, 2, 2]", "[B, C, H, W]"]);

    // No plugin here provides a model class.
    let out = run_cmd(&model, "decode", &input, &w("o.safetensors"));
    assert_input_error(&out, &["no plugin provides a model class"]);
    let out = run(mlhost_with(&plugins).args([
        "run",
        &model,
        "--method",
        "decode",
        "--input",
        &input,
        "--output",
        &w("o.safetensors"),
        "--class",
        "Nope",
    ]));
    assert_input_error(&out, &["no model class named \"Nope\""]);
    assert!(!work.path().join("o.safetensors").exists());

    let out = run(mlhost_with(&plugins).args(["run", &model, "--method", "blur"]));
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn compile_and_inspect_reject_bad_inputs() {
    let plugins = plugin_dir(&[RBLN_NPU]);
    let work = TempDir::new("cli");
    let w = |name: &str| work.path().join(name).display().to_string();

    let out = run(mlhost_with(&plugins).args(["compile", &w("nope"), "-o", &w("out")]));
    assert_input_error(&out, &[&w("nope"), "does not exist"]);

    let src = fixture("sd_like").display().to_string();
    let out = run(mlhost_with(&plugins).args([
        "compile",
        &src,
        "-o",
        &w("out"),
        "--rbln-config",
        &w("cfg.json"),
    ]));
    assert_input_error(&out, &["cfg.json"]);
    std::fs::write(work.path().join("cfg.json"), "[1, 2]").unwrap();
    let out = run(mlhost_with(&plugins).args([
        "compile",
        &src,
        "-o",
        &w("out"),
        "--rbln-config",
        &w("cfg.json"),
    ]));
    assert_input_error(&out, &["cfg.json", "must be a JSON object"]);
    let out = run(mlhost_with(&plugins).args(["compile", &src, "-o", &w("out")]));
    assert_input_error(&out, &["no plugin provides a model class"]);
    let out = run(mlhost_with(&plugins).args([
        "compile",
        &src,
        "-o",
        &w("out"),
        "--sample-size",
        "32x32",
    ]));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("32x32"), "{out:?}");

    let out = run(mlhost_with(&plugins).args(["inspect", &w("nope")]));
    assert_input_error(&out, &[&w("nope")]);
    let out = run(mlhost_with(&plugins).args(["inspect", &src]));
    assert_input_error(&out, &["rbln_config.json", "is not a compiled model"]);
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn compile_inspect_and_run_the_sd_like_fixture() {
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let work = TempDir::new("e2e");
    let w = |name: &str| work.path().join(name).display().to_string();
    let src = fixture("sd_like");
    let io = src.join("io.safetensors");
    let io_s = io.display().to_string();
    let compiled = w("compiled");

    let out = run(mlhost_with(&plugins).args([
        "compile",
        &src.display().to_string(),
        "-o",
        &compiled,
        "--uses-encoder",
        "--sample-size",
        "32",
        "--batch-size",
        "1",
    ]));
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("compiled ") && out.stderr.contains(&compiled),
        "{out:?}"
    );

    let out = run(mlhost_with(&plugins).args(["inspect", &compiled]));
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("\"_compile_cfgs\""), "{out:?}");
    assert!(
        out.stdout.contains("== encoder: ") && out.stdout.contains("== decoder: "),
        "{out:?}"
    );

    let enc = w("enc.safetensors");
    let out = run(mlhost_with(&plugins).args([
        "run", &compiled, "--method", "encode", "--input", &io_s, "--output", &enc,
    ]));
    assert_eq!(out.code, 0, "{out:?}");
    let mean = read_safetensors(Path::new(&enc), "mean").unwrap();
    let reference = read_safetensors(&io, "mean").unwrap();
    assert!(
        max_abs_diff(&mean, &reference) < 1e-3,
        "mean differs from diffusers"
    );
    read_safetensors(Path::new(&enc), "logvar").unwrap();

    let enc_seeded = w("enc_seeded.safetensors");
    let out = run(mlhost_with(&plugins).args([
        "run",
        &compiled,
        "--method",
        "encode",
        "--input",
        &io_s,
        "--output",
        &enc_seeded,
        "--seed",
        "7",
    ]));
    assert_eq!(out.code, 0, "{out:?}");
    let sample = read_safetensors(Path::new(&enc_seeded), "sample").unwrap();
    assert_eq!(sample.shape(), vec![1, 4, 8, 8]);

    // A PNG input is an RGB image mapped to [-1, 1].
    let x = read_safetensors(&io, "x").unwrap();
    let image_in = w("image_in.png");
    write_png(Path::new(&image_in), &x).unwrap();
    let enc_png = w("enc_png.safetensors");
    let out = run(mlhost_with(&plugins).args([
        "run", &compiled, "--method", "encode", "--input", &image_in, "--output", &enc_png,
    ]));
    assert_eq!(out.code, 0, "{out:?}");
    let mean_png = read_safetensors(Path::new(&enc_png), "mean").unwrap();
    assert_eq!(mean_png.shape(), vec![1, 4, 8, 8]);

    let png = w("decoded.png");
    let out = run(mlhost_with(&plugins).args([
        "run", &compiled, "--method", "decode", "--input", &io_s, "--output", &png,
    ]));
    assert_eq!(out.code, 0, "{out:?}");
    let image = read_png(Path::new(&png), 3).unwrap();
    let reference = read_safetensors(&io, "sample").unwrap();
    let clamped = Tensor::new(
        reference.shape(),
        reference
            .data()
            .iter()
            .map(|v| v.clamp(-1.0, 1.0))
            .collect(),
    )
    .unwrap();
    assert!(max_abs_diff(&image, &clamped) <= 1.0 / 127.5 + 1e-3);

    // A diffusers directory is compiled on the fly for the input's shape (vsf 4 from config).
    let dec = w("dec.safetensors");
    let out = run(mlhost_with(&plugins).args([
        "run",
        &src.display().to_string(),
        "--method",
        "decode",
        "--input",
        &io_s,
        "--output",
        &dec,
    ]));
    assert_eq!(out.code, 0, "{out:?}");
    let decoded = read_safetensors(Path::new(&dec), "sample").unwrap();
    assert!(
        max_abs_diff(&decoded, &reference) < 1e-3,
        "decode differs from diffusers"
    );

    // Decoder-only model: encode is refused with a clear, non-panicking error.
    let dec_only = w("dec_only");
    let out = run(mlhost_with(&plugins).args([
        "compile",
        &src.display().to_string(),
        "-o",
        &dec_only,
        "--sample-size",
        "32",
    ]));
    assert_eq!(out.code, 0, "{out:?}");
    let out = run(mlhost_with(&plugins).args([
        "run",
        &dec_only,
        "--method",
        "encode",
        "--input",
        &io_s,
        "--output",
        &w("never.safetensors"),
    ]));
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.starts_with("error: ") && !out.stderr.contains("panicked"),
        "{out:?}"
    );
    assert!(out.stderr.contains("encode"), "{out:?}");
    assert!(!work.path().join("never.safetensors").exists());
}

#[test]
fn pipeline_command_names_bad_manifests_pipelines_inputs_and_outputs() {
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let work = TempDir::new("cli-pipeline");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = root.join("manifests/sd15-img2img.yaml");
    let m = manifest.to_str().unwrap();
    let photo = root.join("tests/fixtures/pipelines/photo64.png");
    let image = format!("image={}", photo.display());
    let pipeline = |args: &[&str]| run(mlhost_with(&plugins).arg("pipeline").args(args));

    let out = pipeline(&[m, "img3img"]);
    assert_input_error(&out, &["no pipeline \"img3img\"", "img2img"]);
    let out = pipeline(&[m, "img2img", "--input", "picture=x.png"]);
    assert_input_error(&out, &["no input \"picture\"", "image"]);
    let out = pipeline(&[m, "img2img", "--input", "image"]);
    assert_input_error(&out, &["NAME=FILE"]);
    let out = pipeline(&[m, "img2img", "--input", &image, "--output", "video=v.png"]);
    assert_input_error(&out, &["no output \"video\"", "latents, reconstruction"]);
    let out = pipeline(&[m, "img2img"]);
    assert_input_error(&out, &["input \"image\" is missing"]);
    let not_png = work.path().join("not.png");
    std::fs::write(&not_png, "text").unwrap();
    let out = pipeline(&[
        m,
        "img2img",
        "--input",
        &format!("image={}", not_png.display()),
    ]);
    assert_input_error(&out, &["step \"read_image\"", "not a PNG or JPEG"]);

    // A manifest error points at the file, line and column.
    let bad = work.path().join("bad.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        "../models/default",
        &root.join("models/default").display().to_string(),
    ) + "    vae: {uses_encoder: false}\n";
    std::fs::write(&bad, text).unwrap();
    let out = pipeline(&[bad.to_str().unwrap(), "img2img"]);
    assert_input_error(&out, &["bad.yaml:19:", "vae.uses_encoder is false"]);

    // The run itself writes both outputs.
    let png = work.path().join("out.png");
    let latents = work.path().join("latents.safetensors");
    let out = pipeline(&[
        m,
        "img2img",
        "--input",
        &image,
        "--output",
        &format!("reconstruction={}", png.display()),
        "--output",
        &format!("latents={}", latents.display()),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(read_png(&png, 3).unwrap().shape(), vec![1, 3, 64, 64]);
    assert_eq!(
        read_safetensors(&latents, "latents").unwrap().shape(),
        vec![1, 4, 16, 16]
    );
}
