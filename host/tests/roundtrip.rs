//! `mlhost roundtrip` on the shipped demo model (`models/default/`): the PSNR it prints on the
//! example photo agrees with the training script's PyTorch figure (`models/default/eval.json`)
//! within 0.1 dB, the written PNG is the reconstruction it measured, a compiled directory gives
//! bit-identical results, and bad inputs are refused with errors naming the culprit.

mod support;

use mlhost::cli::roundtrip::{psnr_u8, to_u8};
use mlhost::io::read_png;
use std::path::{Path, PathBuf};
use support::*;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The PSNR the training script measured in PyTorch on examples/photo.png.
fn pytorch_example_psnr() -> f64 {
    let path = repo("models/default/eval.json");
    let text = std::fs::read_to_string(&path).expect("models/default/eval.json");
    let eval: serde_json::Value = serde_json::from_str(&text).expect("eval.json is JSON");
    eval["example"]["psnr_db"]
        .as_f64()
        .expect("eval.json has example.psnr_db")
}

fn roundtrip(plugins: &TempDir, model: &Path, input: &Path, output: &Path) -> Outcome {
    run(mlhost()
        .arg("--plugin-dir")
        .arg(plugins.path())
        .arg("roundtrip")
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output))
}

/// The figure of the `PSNR xx.xx dB` line.
fn printed_psnr(out: &Outcome) -> f64 {
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("PSNR "))
        .unwrap_or_else(|| panic!("no PSNR line in {out:?}"));
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unparsable PSNR line {line:?}"))
}

fn pixels(path: &Path) -> Vec<u8> {
    let t = read_png(path, 3).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    t.data().iter().map(|&v| to_u8(v)).collect()
}

#[test]
fn roundtrip_of_the_example_photo_matches_pytorch() {
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let work = TempDir::new("roundtrip");
    let input = repo("examples/photo.png");
    let output = work.path().join("reconstructed.png");
    let out = roundtrip(&plugins, &repo("models/default"), &input, &output);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&output.display().to_string()),
        "prints where the output is: {out:?}"
    );

    let reference = pytorch_example_psnr();
    let printed = printed_psnr(&out);
    assert!(
        (printed - reference).abs() <= 0.1,
        "mlhost PSNR {printed} dB vs PyTorch {reference} dB"
    );
    // A trained model, not noise: random weights give about 8 dB on this photo.
    assert!(printed >= 20.0, "the demo model reconstructs: {printed} dB");
    // The file written is the reconstruction that was measured.
    let from_file = psnr_u8(&pixels(&input), &pixels(&output));
    assert!(
        (from_file - printed).abs() < 0.006,
        "{from_file} vs {printed}"
    );
}

#[test]
fn compiled_directory_gives_the_same_reconstruction() {
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let work = TempDir::new("roundtrip-compiled");
    let model = repo("models/default");
    let input = repo("examples/input.png"); // 64x64: quick to compile
    let on_the_fly = work.path().join("fly.png");
    let out = roundtrip(&plugins, &model, &input, &on_the_fly);
    assert_eq!(out.code, 0, "{out:?}");

    let compiled = work.path().join("compiled");
    let compile = run(mlhost()
        .arg("--plugin-dir")
        .arg(plugins.path())
        .arg("compile")
        .arg(&model)
        .arg("-o")
        .arg(&compiled)
        .args(["--uses-encoder", "--sample-size", "64"]));
    assert_eq!(compile.code, 0, "{compile:?}");
    let from_compiled = work.path().join("compiled.png");
    let out2 = roundtrip(&plugins, &compiled, &input, &from_compiled);
    assert_eq!(out2.code, 0, "{out2:?}");
    assert_eq!(pixels(&on_the_fly), pixels(&from_compiled));
    assert_eq!(printed_psnr(&out2), printed_psnr(&out));
}

#[test]
fn roundtrip_refuses_bad_inputs() {
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let work = TempDir::new("roundtrip-bad");
    let model = repo("models/default");
    let photo = repo("examples/photo.png");
    let w = |name: &str| work.path().join(name);
    let expect = |out: Outcome, needles: &[&str]| {
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stderr.starts_with("error: "), "{out:?}");
        assert!(!out.stderr.contains("panicked"), "{out:?}");
        for n in needles {
            assert!(out.stderr.contains(n), "missing {n:?} in {out:?}");
        }
    };

    expect(
        roundtrip(&plugins, &w("absent"), &photo, &w("o.png")),
        &["absent", "does not exist"],
    );
    expect(
        roundtrip(&plugins, &model, &w("x.safetensors"), &w("o.png")),
        &["x.safetensors", ".png"],
    );
    expect(
        roundtrip(&plugins, &model, &photo, &w("o.safetensors")),
        &["o.safetensors", ".png"],
    );
    expect(
        roundtrip(&plugins, &model, &photo, &w("nodir/o.png")),
        &["nodir", "output directory"],
    );
    expect(
        roundtrip(&plugins, &model, &w("missing.png"), &w("o.png")),
        &["missing.png"],
    );

    // 30x30 is not divisible by the vae_scale_factor 4.
    let odd = w("odd.png");
    let img = plugin_api::Tensor::zeros(vec![1, 3, 30, 30]);
    mlhost::io::write_png(&odd, &img).unwrap();
    expect(
        roundtrip(&plugins, &model, &odd, &w("o.png")),
        &["odd.png", "30x30", "vae_scale_factor 4"],
    );

    // A decoder-only compiled directory cannot encode.
    let compiled = w("decoder-only");
    let out = run(mlhost()
        .arg("--plugin-dir")
        .arg(plugins.path())
        .arg("compile")
        .arg(&model)
        .arg("-o")
        .arg(&compiled)
        .args(["--sample-size", "32"]));
    assert_eq!(out.code, 0, "{out:?}");
    expect(
        roundtrip(&plugins, &compiled, &photo, &w("o.png")),
        &["decoder-only", "uses_encoder", "--uses-encoder"],
    );
    assert!(!w("o.png").exists(), "no output after an error");
}
