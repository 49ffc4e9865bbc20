//! The bad-input catalogue, command-line half: every case damages one thing (a file, a model
//! directory, a compiled directory, a manifest, an argument), runs `mlhost` on it and checks the
//! named error: the exit code, `error: ` on stderr naming what is wrong (file, field, tensor,
//! line), no panic, and that the command neither wrote nor deleted a file. The HTTP half is in
//! `serve_catalogue.rs`.

mod support;

use mlhost::io::write_safetensors;
use plugin_api::{NamedTensor, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use support::*;

/// What every case may use. Read-only: cases copy what they damage into their scratch dir.
struct Ctx {
    plugins: TempDir,
    /// The sd_like fixture compiled with the encoder (batch 1, 32x32).
    compiled: PathBuf,
    work: TempDir,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn ctx() -> &'static Ctx {
    static CTX: OnceLock<Ctx> = OnceLock::new();
    CTX.get_or_init(|| {
        let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
        let work = TempDir::new("catalogue");
        let compiled = work.path().join("compiled");
        let out = run(mlhost()
            .arg("--plugin-dir")
            .arg(plugins.path())
            .arg("compile")
            .arg(fixture("sd_like"))
            .arg("-o")
            .arg(&compiled)
            .args(["--uses-encoder", "--sample-size", "32"]));
        assert_eq!(out.code, 0, "compiling the catalogue's model: {out:?}");
        Ctx {
            plugins,
            compiled,
            work,
        }
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// `d/model`: a copy of the sd_like diffusers directory (config.json + weights).
fn model(d: &Path) -> PathBuf {
    let dir = d.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(fixture("sd_like").join(f), dir.join(f)).unwrap();
    }
    dir
}

/// `d/compiled`: a copy of the compiled directory.
fn compiled(d: &Path) -> PathBuf {
    let dir = d.join("compiled");
    copy_dir(&ctx().compiled, &dir);
    dir
}

fn edit_json(file: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn tensor_file(d: &Path, name: &str, tensor: &str, shape: Vec<usize>) {
    write_safetensors(
        &d.join(name),
        &[NamedTensor::new(tensor, Tensor::zeros(shape))],
    )
    .unwrap();
}

/// A safetensors file from a raw JSON header and `data_len` zero bytes.
fn raw_safetensors(file: &Path, header: &str, data_len: usize) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    std::fs::write(file, bytes).unwrap();
}

fn flip_byte(file: &Path, at_from_end: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    let i = bytes.len() - at_from_end;
    bytes[i] ^= 0x5a;
    std::fs::write(file, bytes).unwrap();
}

fn none(_: &Path) {}

/// `d/m.yaml`: `head`, then a model `vae` of the sd_like fixture with `model_extra` lines, then
/// `tail`.
fn manifest(d: &Path, head: &str, model_extra: &str, tail: &str) {
    let sd = fixture("sd_like").display().to_string();
    let text = format!("{head}models:\n  - name: vae\n    model_id: {sd}\n{model_extra}{tail}");
    std::fs::write(d.join("m.yaml"), text).unwrap();
}

/// A pipeline `p` that decodes `image` into `pixels`, then runs `op` on `reads`.
fn pipeline_steps(reads: &str, op: &str) -> String {
    format!(
        "pipelines:\n  - name: p\n    inputs: {{image: image}}\n    outputs: {{out: image}}\n    \
         steps:\n      - name: read\n        op: image_decode\n        inputs: {{bytes: image}}\n        \
         outputs: {{image: pixels}}\n      - name: write\n        op: {op}\n        inputs: {{image: \
         {reads}}}\n        outputs: {{bytes: out}}\n"
    )
}

/// `d/z.safetensors`: a latent the compiled model takes.
fn z(d: &Path) {
    tensor_file(d, "z.safetensors", "z", vec![1, 4, 8, 8]);
}

/// One catalogue entry. In `args` and `needles`, `{d}` is the case's scratch directory and `{c}`
/// the shared compiled directory.
struct Case {
    name: &'static str,
    setup: fn(&Path),
    args: &'static [&'static str],
    code: i32,
    needles: &'static [&'static str],
}

const fn case(
    name: &'static str,
    setup: fn(&Path),
    args: &'static [&'static str],
    needles: &'static [&'static str],
) -> Case {
    Case {
        name,
        setup,
        args,
        code: 2,
        needles,
    }
}

impl Case {
    /// A case whose exit code is not 2 (1: the input is understood but not supported).
    fn exit(self, code: i32) -> Case {
        Case { code, ..self }
    }
}

const RUN_DECODE: &[&str] = &[
    "run",
    "{c}",
    "--method",
    "decode",
    "--input",
    "{d}/z.safetensors",
    "--output",
    "{d}/out.safetensors",
];

fn cases() -> Vec<Case> {
    vec![
        // Command-line files.
        case(
            "run: the input file does not exist",
            none,
            RUN_DECODE,
            &["{d}/z.safetensors"],
        ),
        case(
            "run: the input has an unknown extension",
            none,
            &[
                "run",
                "{c}",
                "--method",
                "decode",
                "--input",
                "{d}/z.npy",
                "--output",
                "{d}/o.safetensors",
            ],
            &["{d}/z.npy", "unknown file extension"],
        ),
        case(
            "run: the output has an unknown extension",
            z,
            &[
                "run",
                "{c}",
                "--method",
                "decode",
                "--input",
                "{d}/z.safetensors",
                "--output",
                "{d}/o.jpeg",
            ],
            &["o.jpeg", "unknown file extension"],
        ),
        case(
            "run: decode of a PNG",
            |d| std::fs::write(d.join("z.png"), b"\x89PNG").unwrap(),
            &[
                "run",
                "{c}",
                "--method",
                "decode",
                "--input",
                "{d}/z.png",
                "--output",
                "{d}/o.safetensors",
            ],
            &["z.png", "`z`"],
        ),
        case(
            "run: the input lacks tensor z",
            |d| tensor_file(d, "z.safetensors", "latents", vec![1, 4, 8, 8]),
            RUN_DECODE,
            &["{d}/z.safetensors", "`z`"],
        ),
        case(
            "run: the latent has the wrong shape",
            |d| tensor_file(d, "z.safetensors", "z", vec![1, 4, 9, 8]),
            RUN_DECODE,
            &["[1, 4, 9, 8]", "[1, 4, 8, 8]"],
        ),
        case(
            "run: the latent has the wrong rank",
            |d| tensor_file(d, "z.safetensors", "z", vec![4, 8, 8]),
            RUN_DECODE,
            &["[4, 8, 8]"],
        ),
        case(
            "run: the safetensors file is shorter than its length prefix",
            |d| std::fs::write(d.join("z.safetensors"), [1u8, 2, 3]).unwrap(),
            RUN_DECODE,
            &["{d}/z.safetensors"],
        ),
        case(
            "run: the safetensors header is not JSON",
            |d| raw_safetensors(&d.join("z.safetensors"), "{not json", 0),
            RUN_DECODE,
            &["{d}/z.safetensors"],
        ),
        case(
            "run: the safetensors header announces more bytes than the file has",
            |d| {
                let mut b = 1_000_000u64.to_le_bytes().to_vec();
                b.extend_from_slice(b"{}");
                std::fs::write(d.join("z.safetensors"), b).unwrap();
            },
            RUN_DECODE,
            &["{d}/z.safetensors"],
        ),
        case(
            "run: a tensor's offsets point past the data",
            |d| {
                raw_safetensors(
                    &d.join("z.safetensors"),
                    r#"{"z":{"dtype":"F32","shape":[1,4,8,8],"data_offsets":[0,1024]}}"#,
                    16,
                )
            },
            RUN_DECODE,
            &["{d}/z.safetensors"],
        ),
        case(
            "run: the latent is stored as integers",
            |d| {
                raw_safetensors(
                    &d.join("z.safetensors"),
                    r#"{"z":{"dtype":"I32","shape":[1,4,8,8],"data_offsets":[0,1024]}}"#,
                    1024,
                )
            },
            RUN_DECODE,
            &["`z`", "I32"],
        ),
        case(
            "run: the PNG is corrupt",
            |d| std::fs::write(d.join("x.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap(),
            &[
                "run",
                "{c}",
                "--method",
                "encode",
                "--input",
                "{d}/x.png",
                "--output",
                "{d}/o.safetensors",
            ],
            &["{d}/x.png", "PNG"],
        ),
        case(
            "run: the output directory does not exist",
            z,
            &[
                "run",
                "{c}",
                "--method",
                "decode",
                "--input",
                "{d}/z.safetensors",
                "--output",
                "{d}/no/such/dir/o.safetensors",
            ],
            &["{d}/no/such/dir"],
        ),
        case(
            "run: the model directory does not exist",
            none,
            &[
                "run",
                "{d}/nope",
                "--method",
                "decode",
                "--input",
                "{d}/z.safetensors",
                "--output",
                "{d}/o.safetensors",
            ],
            &["{d}/nope", "does not exist"],
        ),
        case(
            "run: encode on a decoder-only compiled model",
            |d| {
                let c = compiled(d);
                std::fs::remove_file(c.join("encoder.rbln")).unwrap();
                edit_json(&c.join("rbln_config.json"), |v| {
                    v["uses_encoder"] = false.into();
                    let cfgs = v["_compile_cfgs"].as_array_mut().unwrap();
                    cfgs.retain(|c| c["compiled_model_name"] != "encoder");
                });
                tensor_file(d, "x.safetensors", "x", vec![1, 3, 32, 32]);
            },
            &[
                "run",
                "{d}/compiled",
                "--method",
                "encode",
                "--input",
                "{d}/x.safetensors",
                "--output",
                "{d}/o.safetensors",
            ],
            &["encode", "uses_encoder"],
        ),
        // Model (diffusers) directories.
        case(
            "compile: the model directory does not exist",
            none,
            &["compile", "{d}/nope", "-o", "{d}/out"],
            &["{d}/nope", "does not exist"],
        ),
        case(
            "compile: config.json is missing",
            |d| std::fs::remove_file(model(d).join("config.json")).unwrap(),
            &["compile", "{d}/model", "-o", "{d}/out"],
            &["config.json"],
        ),
        case(
            "compile: config.json is not JSON",
            |d| {
                std::fs::write(
                    model(d).join("config.json"),
                    "{\n  \"in_channels\": 3,\n  oops\n}",
                )
                .unwrap()
            },
            &["compile", "{d}/model", "-o", "{d}/out"],
            &["config.json", "line 3"],
        ),
        case(
            "compile: config.json names an unknown activation",
            |d| {
                edit_json(&model(d).join("config.json"), |v| {
                    v["act_fn"] = "swish2".into()
                })
            },
            &["compile", "{d}/model", "-o", "{d}/out"],
            &["act_fn", "swish2"],
        )
        .exit(1),
        case(
            "compile: norm_num_groups does not divide the channels",
            |d| {
                edit_json(&model(d).join("config.json"), |v| {
                    v["norm_num_groups"] = 5.into()
                })
            },
            &["compile", "{d}/model", "-o", "{d}/out"],
            &["norm_num_groups", "5"],
        ),
        case(
            "compile: block_out_channels is empty",
            |d| {
                edit_json(&model(d).join("config.json"), |v| {
                    v["block_out_channels"] = serde_json::json!([]);
                })
            },
            &["compile", "{d}/model", "-o", "{d}/out"],
            &["block_out_channels"],
        ),
        case(
            "compile: an unknown down block type",
            |d| {
                edit_json(&model(d).join("config.json"), |v| {
                    v["down_block_types"][1] = "CrossAttnDownBlock2D".into();
                })
            },
            &["compile", "{d}/model", "-o", "{d}/out"],
            &["CrossAttnDownBlock2D"],
        )
        .exit(1),
        case(
            "compile: the weights file is missing",
            |d| std::fs::remove_file(model(d).join("diffusion_pytorch_model.safetensors")).unwrap(),
            &["compile", "{d}/model", "-o", "{d}/out"],
            &["diffusion_pytorch_model.safetensors"],
        ),
        case(
            "compile: a weight is missing",
            |d| {
                let m = model(d);
                raw_safetensors(
                    &m.join("diffusion_pytorch_model.safetensors"),
                    r#"{"encoder.conv_in.weight":{"dtype":"F32","shape":[16,3,3,3],"data_offsets":[0,1728]}}"#,
                    1728,
                );
            },
            &["compile", "{d}/model", "-o", "{d}/out"],
            &["diffusion_pytorch_model.safetensors", "missing tensor"],
        ),
        case(
            "compile: the weights file is truncated",
            |d| {
                let f = model(d).join("diffusion_pytorch_model.safetensors");
                let bytes = std::fs::read(&f).unwrap();
                std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
            },
            &["compile", "{d}/model", "-o", "{d}/out"],
            &["diffusion_pytorch_model.safetensors"],
        ),
        case(
            "compile: the sample size is not a multiple of the scale factor",
            none,
            &[
                "compile",
                "../tests/fixtures/sd_like",
                "-o",
                "{d}/out",
                "--sample-size",
                "30",
            ],
            &["sample_size", "30"],
        ),
        case(
            "compile: batch size 0",
            none,
            &[
                "compile",
                "../tests/fixtures/sd_like",
                "-o",
                "{d}/out",
                "--batch-size",
                "0",
            ],
            &["batch"],
        ),
        case(
            "compile: --rbln-config has an unknown key",
            |d| {
                std::fs::write(
                    d.join("cfg.json"),
                    r#"{"sample_size": 32, "smaple_size": 64}"#,
                )
                .unwrap()
            },
            &[
                "compile",
                "../tests/fixtures/sd_like",
                "-o",
                "{d}/out",
                "--rbln-config",
                "{d}/cfg.json",
            ],
            &["smaple_size"],
        ),
        case(
            "compile: --rbln-config is not JSON",
            |d| std::fs::write(d.join("cfg.json"), "{sample_size: 32").unwrap(),
            &[
                "compile",
                "../tests/fixtures/sd_like",
                "-o",
                "{d}/out",
                "--rbln-config",
                "{d}/cfg.json",
            ],
            &["{d}/cfg.json"],
        ),
        case(
            "compile: --rbln-config has a value of the wrong type",
            |d| std::fs::write(d.join("cfg.json"), r#"{"uses_encoder": "yes"}"#).unwrap(),
            &[
                "compile",
                "../tests/fixtures/sd_like",
                "-o",
                "{d}/out",
                "--rbln-config",
                "{d}/cfg.json",
            ],
            &["uses_encoder"],
        ),
        case(
            "compile: the output is the input directory",
            |d| {
                model(d);
            },
            &["compile", "{d}/model", "-o", "{d}/model"],
            &["{d}/model", "is the input directory"],
        ),
        case(
            "compile: the output directory exists",
            |d| std::fs::create_dir_all(d.join("out/keep")).unwrap(),
            &["compile", "../tests/fixtures/sd_like", "-o", "{d}/out"],
            &["{d}/out", "already exists", "--overwrite"],
        ),
        case(
            "compile --overwrite: the output holds files mlhost did not write",
            |d| {
                std::fs::create_dir_all(d.join("out")).unwrap();
                std::fs::write(d.join("out/notes.txt"), "mine").unwrap();
            },
            &[
                "compile",
                "../tests/fixtures/sd_like",
                "-o",
                "{d}/out",
                "--overwrite",
            ],
            &["{d}/out", "notes.txt"],
        ),
        case(
            "compile: a batch size whose plan cannot be allocated",
            none,
            &[
                "compile",
                "../tests/fixtures/sd_like",
                "-o",
                "{d}/out",
                "--batch-size",
                "1000000000",
            ],
            &["batch_size", "memory budget"],
        ),
        case(
            "compile: a sample size whose plan cannot be allocated",
            none,
            &[
                "compile",
                "../tests/fixtures/sd_like",
                "-o",
                "{d}/out",
                "--sample-size",
                "1048576",
            ],
            &["1048576"],
        ),
        case(
            "compile: config.json asks for a billion layers per block",
            |d| {
                edit_json(&model(d).join("config.json"), |v| {
                    v["layers_per_block"] = 1_000_000_000u64.into();
                })
            },
            &["compile", "{d}/model", "-o", "{d}/out"],
            &["config.json", "layers_per_block"],
        ),
        case(
            "compile: the weights file has a duplicate tensor name",
            |d| {
                let m = model(d);
                raw_safetensors(
                    &m.join("diffusion_pytorch_model.safetensors"),
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    8,
                );
            },
            &["compile", "{d}/model", "-o", "{d}/out"],
            &["diffusion_pytorch_model.safetensors", "'a' appears twice"],
        ),
        // Compiled directories.
        case(
            "load: an artifact's checksum does not match",
            |d| flip_byte(&compiled(d).join("decoder.rbln"), 3),
            &["inspect", "{d}/compiled"],
            &["decoder.rbln", "checksum"],
        ),
        case(
            "load: an artifact is truncated",
            |d| {
                let f = compiled(d).join("decoder.rbln");
                let bytes = std::fs::read(&f).unwrap();
                std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
                z(d);
            },
            RUN_DECODE_COMPILED_COPY,
            &["decoder.rbln", "truncated"],
        ),
        case(
            "load: an artifact is not an artifact",
            |d| {
                std::fs::write(
                    compiled(d).join("decoder.rbln"),
                    b"hello world, not an artifact",
                )
                .unwrap();
                z(d);
            },
            RUN_DECODE_COMPILED_COPY,
            &["decoder.rbln", "magic"],
        ),
        case(
            "load: an artifact is missing",
            |d| {
                std::fs::remove_file(compiled(d).join("decoder.rbln")).unwrap();
                z(d);
            },
            RUN_DECODE_COMPILED_COPY,
            &["decoder.rbln"],
        ),
        case(
            "load: rbln_config.json is not JSON",
            |d| {
                std::fs::write(compiled(d).join("rbln_config.json"), "{").unwrap();
                z(d);
            },
            RUN_DECODE_COMPILED_COPY,
            &["rbln_config.json"],
        ),
        case(
            "load: rbln_config.json has a negative batch size",
            |d| {
                edit_json(&compiled(d).join("rbln_config.json"), |v| {
                    v["batch_size"] = (-1).into();
                });
                z(d);
            },
            RUN_DECODE_COMPILED_COPY,
            &["rbln_config.json", "batch_size"],
        ),
        case(
            "run: an unknown model class",
            z,
            &[
                "run",
                "{c}",
                "--method",
                "decode",
                "--input",
                "{d}/z.safetensors",
                "--output",
                "{d}/o.safetensors",
                "--class",
                "NoSuchClass",
            ],
            &["NoSuchClass"],
        ),
        case(
            "load: rbln_config.json is missing",
            |d| {
                std::fs::remove_file(compiled(d).join("rbln_config.json")).unwrap();
                z(d);
            },
            RUN_DECODE_COMPILED_COPY,
            &["rbln_config.json"],
        ),
        case(
            "load: rbln_config.json has an unknown key",
            |d| {
                edit_json(&compiled(d).join("rbln_config.json"), |v| {
                    v["batch_sise"] = 2.into();
                });
                z(d);
            },
            RUN_DECODE_COMPILED_COPY,
            &["rbln_config.json", "batch_sise"],
        ),
        // Manifests.
        case(
            "serve: the manifest has an unknown field",
            |d| manifest(d, "", "    exprot: true\n", ""),
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:4:5", "exprot"],
        ),
        case(
            "serve: the manifest is not YAML",
            |d| std::fs::write(d.join("m.yaml"), "models: [\n  {name: vae\n").unwrap(),
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:"],
        ),
        case(
            "serve: a device asks for threads (removed)",
            |d| {
                let head = "devices:\n  - name: npu\n    plugin: rbln-npu\n    ids: [0]\n    \
                            options: {threads: 2}\n";
                manifest(d, head, "    device: npu\n", "")
            },
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:5", "devices[0].options.threads", "cores"],
        ),
        case(
            "serve: a device's core range ends before it starts",
            |d| {
                let head = "devices:\n  - name: npu\n    plugin: rbln-npu\n    ids: [0]\n    \
                            options: {cores: \"1-0\"}\n";
                manifest(d, head, "    device: npu\n", "")
            },
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &[
                "{d}/m.yaml",
                "cores of device 0",
                "range 1-0 ends before it starts",
            ],
        ),
        case(
            "serve: device_map names a device that does not exist",
            |d| {
                let head = "devices:\n  - name: npu\n    plugin: rbln-npu\n    ids: [0]\n";
                let extra = "    device: npu\n    rbln_config: {device_map: {decoder: 3}}\n";
                manifest(d, head, extra, "")
            },
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["device_map.decoder: device 3 does not exist; the rbln-npu devices are 0 (cores"],
        ),
        case(
            "serve: a model uses an undeclared device",
            |d| manifest(d, "", "    device: gpu0\n", ""),
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:4", "gpu0"],
        ),
        case(
            "serve: two models share a name",
            |d| {
                let sd = fixture("sd_like").display().to_string();
                manifest(d, "", &format!("  - name: vae\n    model_id: {sd}\n"), "")
            },
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:4", "vae"],
        ),
        case(
            "serve: zero instances",
            |d| manifest(d, "", "    serving: {instances: 0}\n", ""),
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:4", "instances"],
        ),
        case(
            "serve: a queue delay that never ends",
            |d| {
                manifest(
                    d,
                    "",
                    "    serving: {max_queue_delay_us: 1000000000000000000}\n",
                    "",
                )
            },
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:4", "max_queue_delay_us", "10000000"],
        ),
        case(
            "serve: a queue no machine can hold",
            |d| manifest(d, "", "    serving: {max_queue_size: 1000000000}\n", ""),
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:4", "max_queue_size"],
        ),
        case(
            "serve: a thousand instances",
            |d| manifest(d, "", "    serving: {instances: 1000}\n", ""),
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:4", "instances"],
        ),
        case(
            "serve: a request limit of zero bytes",
            |d| manifest(d, "", "    serving: {max_request_bytes: 0}\n", ""),
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:4", "max_request_bytes"],
        ),
        case(
            "serve: a model name no URL can carry",
            |d| {
                let sd = fixture("sd_like").display().to_string();
                let name = "v".repeat(1 << 20);
                let text = format!("models:\n  - name: {name}\n    model_id: {sd}\n");
                std::fs::write(d.join("m.yaml"), text).unwrap();
            },
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:2", "1 to 128 characters"],
        ),
        case(
            "serve: a model name with a slash",
            |d| {
                let sd = fixture("sd_like").display().to_string();
                let text = format!("models:\n  - name: a/b\n    model_id: {sd}\n");
                std::fs::write(d.join("m.yaml"), text).unwrap();
            },
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:2", "'/'"],
        ),
        case(
            "serve: the model directory does not exist",
            |d| {
                std::fs::write(
                    d.join("m.yaml"),
                    "models:\n  - name: vae\n    model_id: nope\n",
                )
                .unwrap()
            },
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:3", "{d}/nope"],
        ),
        case(
            "serve: a plugin library that does not exist",
            |d| manifest(d, "plugins: [no_such_plugin]\n", "", ""),
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["no_such_plugin"],
        ),
        case(
            "pipeline: a step reads an undefined tensor",
            |d| manifest(d, "", "", &pipeline_steps("imagee", "image_encode")),
            &["pipeline", "{d}/m.yaml", "p", "--print-graph"],
            &["{d}/m.yaml:", "imagee"],
        ),
        case(
            "pipeline: a step uses an unknown op",
            |d| manifest(d, "", "", &pipeline_steps("pixels", "gaussian_blur")),
            &["pipeline", "{d}/m.yaml", "p", "--print-graph"],
            &["{d}/m.yaml:", "gaussian_blur"],
        ),
        case(
            "pipeline: no such pipeline",
            |d| manifest(d, "", "", ""),
            &["pipeline", "{d}/m.yaml", "nope", "--print-graph"],
            &["{d}/m.yaml", "nope"],
        ),
        // Model ids: directories, subfolders, Hugging Face Hub ids (offline, an empty cache).
        case(
            "compile: a model that is neither a directory nor a Hub id",
            none,
            &["compile", "{d}/missing", "-o", "{d}/out"],
            &[
                "{d}/missing does not exist",
                "is not a Hugging Face Hub id (org/name)",
            ],
        ),
        case(
            "compile: a Hub id offline that is not in the cache",
            none,
            &["compile", "mlhost-test/absent", "-o", "{d}/out"],
            &[
                "mlhost-test/absent revision \"main\" file config.json",
                "is not in the Hugging Face cache",
                "models--mlhost-test--absent/refs/main",
                "HF_HUB_OFFLINE",
            ],
        ),
        case(
            "compile: a malformed Hub revision",
            none,
            &[
                "compile",
                "mlhost-test/absent",
                "--revision",
                "../main",
                "-o",
                "{d}/out",
            ],
            &["revision \"../main\"", "\"..\""],
        ),
        case(
            "compile: a malformed variant",
            |d| drop(model(d)),
            &[
                "compile",
                "{d}/model",
                "--variant",
                "fp16/x",
                "-o",
                "{d}/out",
            ],
            &["variant \"fp16/x\""],
        ),
        case(
            "compile: a revision for a local directory",
            |d| drop(model(d)),
            &[
                "compile",
                "{d}/model",
                "--revision",
                "main",
                "-o",
                "{d}/out",
            ],
            &[
                "revision \"main\" applies to a Hugging Face Hub id",
                "{d}/model",
            ],
        ),
        case(
            "compile: the variant's weights file is missing",
            |d| drop(model(d)),
            &["compile", "{d}/model", "--variant", "fp16", "-o", "{d}/out"],
            &["{d}/model/diffusion_pytorch_model.fp16.safetensors"],
        ),
        case(
            "compile: a subfolder that does not exist",
            |d| drop(model(d)),
            &[
                "compile",
                "{d}/model",
                "--subfolder",
                "unet",
                "-o",
                "{d}/out",
            ],
            &["{d}/model/unet does not exist"],
        ),
        case(
            "compile: a pipeline directory without vae/",
            |d| {
                std::fs::create_dir(d.join("pipe")).unwrap();
                std::fs::write(d.join("pipe/model_index.json"), "{}").unwrap();
            },
            &["compile", "{d}/pipe", "-o", "{d}/out"],
            &["{d}/pipe holds model_index.json", "--subfolder"],
        ),
        case(
            "run: a variant for a compiled directory",
            z,
            &[
                "run",
                "{c}",
                "--variant",
                "fp16",
                "--method",
                "decode",
                "--input",
                "{d}/z.safetensors",
                "--output",
                "{d}/out.safetensors",
            ],
            &["variant \"fp16\"", "loaded as a compiled model"],
        ),
        case(
            "serve: a manifest model_id that is neither a directory nor a Hub id",
            |d| {
                let text = "models:\n  - name: vae\n    model_id: no/such/dir\n";
                std::fs::write(d.join("m.yaml"), text).unwrap()
            },
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &[
                "{d}/m.yaml:3:15",
                "models[0].model_id",
                "is not a Hugging Face Hub id",
            ],
        ),
        case(
            "serve: a manifest revision for a local model_id",
            |d| manifest(d, "", "    revision: main\n", ""),
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:4", "models[0].revision", "local directory"],
        ),
        case(
            "serve: a malformed manifest variant",
            |d| manifest(d, "", "    variant: fp16/x\n", ""),
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &["{d}/m.yaml:4", "models[0].variant", "fp16/x"],
        ),
        case(
            "serve: a manifest Hub model offline that is not in the cache",
            |d| {
                let text = "models:\n  - name: vae\n    model_id: mlhost-test/absent\n    \
                            subfolder: vae\n";
                std::fs::write(d.join("m.yaml"), text).unwrap()
            },
            &["serve", "{d}/m.yaml", "--http-port", "0"],
            &[
                "{d}/m.yaml: model \"vae\"",
                "mlhost-test/absent revision \"main\" file vae/config.json",
                "HF_HUB_OFFLINE",
            ],
        ),
    ]
}

const RUN_DECODE_COMPILED_COPY: &[&str] = &[
    "run",
    "{d}/compiled",
    "--method",
    "decode",
    "--input",
    "{d}/z.safetensors",
    "--output",
    "{d}/out.safetensors",
];

/// Every file under `dir` with its size: what a failed command must leave as it was.
fn listing(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                out.insert(p.clone(), 0);
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::metadata(&p).unwrap().len());
            }
        }
    }
    out
}

#[test]
fn every_bad_input_gets_its_named_error() {
    let ctx = ctx();
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let scratch = TempDir::new("case");
        let d = scratch.path().display().to_string();
        let c = ctx.compiled.display().to_string();
        let fill = |s: &str| s.replace("{d}", &d).replace("{c}", &c);
        (case.setup)(scratch.path());
        let before = listing(scratch.path());
        let out = run(mlhost()
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            // Offline (as every test command), and a Hugging Face cache that does not exist.
            .env("HF_HUB_CACHE", ctx.plugins.path().join("no-hub-cache"))
            .arg("--plugin-dir")
            .arg(ctx.plugins.path())
            .args(case.args.iter().map(|a| fill(a))));
        let mut wrong = Vec::new();
        if out.code != case.code {
            wrong.push(format!("exit code {} (expected {})", out.code, case.code));
        }
        if !out.stderr.lines().any(|l| l.starts_with("error: ")) {
            wrong.push("no `error: ` line on stderr".into());
        }
        if out.stderr.contains("panicked") {
            wrong.push("it panicked".into());
        }
        for n in case.needles {
            let n = fill(n);
            if !out.stderr.contains(&n) {
                wrong.push(format!("the error does not name {n:?}"));
            }
        }
        if listing(scratch.path()) != before {
            wrong.push("files were written or deleted".into());
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n  stderr: {}",
                case.name,
                wrong.join("; "),
                out.stderr.trim()
            ));
        }
    }
    eprintln!("{} command-line cases", cases.len());
    // The context is a static, which is never dropped: remove its directories here.
    let _ = std::fs::remove_dir_all(ctx.plugins.path());
    let _ = std::fs::remove_dir_all(ctx.work.path());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
