//! Every bad input named by the foundation issue gives an error that names the cause, through the
//! Rust API (the CLI and plugin-loading cases live in `cli.rs` and `host/tests/`).

use integration_tests::*;
use plugin_api::{ErrorKind, Export, PluginError, Tensor};
use rbln_vae::RBLNAutoencoderKL;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Copies a fixture's model files into a temp dir the test may damage.
fn scratch_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(fixture_dir(name).join(f), dir.join(f)).unwrap();
    }
    (tmp, dir)
}

fn compile(dir: &Path, rbln_config: Value) -> Result<RBLNAutoencoderKL, PluginError> {
    let (backend, _) = counting_backend();
    RBLNAutoencoderKL::from_pretrained(
        dir,
        Export::Yes,
        rbln_config,
        json!({}),
        backend,
        &no_progress(),
    )
}

fn load(dir: &Path) -> Result<RBLNAutoencoderKL, PluginError> {
    load_compiled(dir)
}

#[track_caller]
fn expect_err<T>(r: Result<T, PluginError>, kind: ErrorKind, needles: &[&str]) -> PluginError {
    let e = match r {
        Ok(_) => panic!("expected an error mentioning {needles:?}"),
        Err(e) => e,
    };
    assert_eq!(e.kind, kind, "wrong kind for: {e}");
    for n in needles {
        assert!(
            e.message().contains(n),
            "error {:?} does not mention {n:?}",
            e.message()
        );
    }
    e
}

fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let p = dir.join("diffusion_pytorch_model.safetensors");
    let mut all: Vec<(String, Tensor)> = read_tensors(&p).into_iter().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut all);
    let refs: Vec<(&str, &Tensor)> = all.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_tensors(&p, &refs);
}

#[test]
fn missing_config_json() {
    let (_tmp, dir) = scratch_copy("sd_like");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    expect_err(
        compile(&dir, json!({})),
        ErrorKind::NotFound,
        &["config.json"],
    );
}

#[test]
fn missing_model_directory() {
    let dir = Path::new("/nonexistent/vae-model");
    let e = compile(dir, json!({})).err().expect("error");
    assert!(e.message().contains("/nonexistent/vae-model"), "{e}");
}

#[test]
fn truncated_safetensors() {
    let (_tmp, dir) = scratch_copy("sd_like");
    let p = dir.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    expect_err(
        compile(&dir, json!({})),
        ErrorKind::InvalidArgument,
        &["diffusion_pytorch_model.safetensors"],
    );
}

#[test]
fn garbage_safetensors() {
    let (_tmp, dir) = scratch_copy("sd_like");
    std::fs::write(
        dir.join("diffusion_pytorch_model.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    expect_err(
        compile(&dir, json!({})),
        ErrorKind::InvalidArgument,
        &["diffusion_pytorch_model.safetensors"],
    );
}

#[test]
fn missing_tensor() {
    let (_tmp, dir) = scratch_copy("sd_like");
    rewrite_weights(&dir, |all| {
        all.retain(|(n, _)| n != "decoder.conv_in.weight")
    });
    expect_err(
        compile(&dir, json!({})),
        ErrorKind::InvalidArgument,
        &["decoder.conv_in.weight"],
    );
}

#[test]
fn wrong_tensor_shape() {
    let (_tmp, dir) = scratch_copy("sd_like");
    let mut expected = Vec::new();
    rewrite_weights(&dir, |all| {
        let (_, t) = all
            .iter_mut()
            .find(|(n, _)| n == "encoder.conv_in.bias")
            .unwrap();
        expected = t.shape();
        let n = t.data().len() + 1;
        *t = Tensor::new(vec![n], vec![0.0; n]).unwrap();
    });
    let e = expect_err(
        compile(&dir, json!({})),
        ErrorKind::InvalidArgument,
        &["encoder.conv_in.bias"],
    );
    let wrong = format!("{:?}", [expected[0] + 1]);
    let right = format!("{expected:?}");
    assert!(
        e.message().contains(&wrong) && e.message().contains(&right),
        "{e}"
    );
}

#[test]
fn config_contradicts_weights() {
    let (_tmp, dir) = scratch_copy("sd_like");
    let p = dir.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let lc = cfg["latent_channels"].as_u64().unwrap();
    cfg["latent_channels"] = json!(lc * 2);
    std::fs::write(&p, serde_json::to_vec(&cfg).unwrap()).unwrap();
    // The latent-facing weights in the file have lc channels, the config now implies 2*lc.
    expect_err(
        compile(&dir, json!({})),
        ErrorKind::InvalidArgument,
        &[
            "decoder.conv_in.weight",
            &format!("[32, {}, 3, 3]", lc * 2),
            &format!("[32, {lc}, 3, 3]"),
        ],
    );
}

#[test]
fn config_layers_per_block_contradicts_weights() {
    let (_tmp, dir) = scratch_copy("sd_like");
    let p = dir.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let l = cfg["layers_per_block"].as_u64().unwrap();
    cfg["layers_per_block"] = json!(l + 1);
    std::fs::write(&p, serde_json::to_vec(&cfg).unwrap()).unwrap();
    // The config now expects one more resnet per block than the file holds.
    expect_err(
        compile(&dir, json!({})),
        ErrorKind::InvalidArgument,
        &["resnets"],
    );
}

#[test]
fn unexpected_tensor_in_weights() {
    let (_tmp, dir) = scratch_copy("sd_like");
    rewrite_weights(&dir, |all| {
        all.push(("encoder.extra_block.weight".into(), Tensor::zeros(vec![2])));
    });
    expect_err(
        compile(&dir, json!({})),
        ErrorKind::InvalidArgument,
        &["encoder.extra_block.weight"],
    );
}

#[test]
fn sample_size_not_multiple_of_vae_scale_factor() {
    let (_tmp, dir) = scratch_copy("sd_like");
    expect_err(
        compile(&dir, json!({"sample_size": [30, 32]})),
        ErrorKind::InvalidArgument,
        &["sample_size", "vae_scale_factor"],
    );
}

#[test]
fn batch_size_zero() {
    let (_tmp, dir) = scratch_copy("sd_like");
    expect_err(
        compile(&dir, json!({"batch_size": 0})),
        ErrorKind::InvalidArgument,
        &["batch_size must be a positive integer, got 0"],
    );
}

#[test]
fn unknown_rbln_config_key() {
    let (_tmp, dir) = scratch_copy("sd_like");
    expect_err(
        compile(&dir, json!({"batch_sise": 2})),
        ErrorKind::InvalidArgument,
        &["batch_sise"],
    );
}

#[test]
fn wrong_input_shape_at_run_time() {
    let vae = compile(&fixture_dir("sd_like"), fixture_rbln_config("sd_like")).unwrap();
    let io = fixture_io("sd_like");
    let mut bad = io["x"].shape();
    bad[2] += 4;
    let x = Tensor::zeros(bad.clone());
    let e = expect_err(
        vae.encode(&x),
        ErrorKind::InvalidArgument,
        &[&format!("{bad:?}")],
    );
    assert!(
        e.message().contains(&format!("{:?}", io["x"].shape())),
        "{e}"
    );
    let mut badz = io["z"].shape();
    badz[1] += 1;
    expect_err(
        vae.decode(&Tensor::zeros(badz.clone())),
        ErrorKind::InvalidArgument,
        &[&format!("{badz:?}"), &format!("{:?}", io["z"].shape())],
    );
}

#[test]
fn encode_on_decoder_only_model() {
    let mut cfg = fixture_rbln_config("sd_like");
    cfg["uses_encoder"] = json!(false);
    let vae = compile(&fixture_dir("sd_like"), cfg).unwrap();
    let io = fixture_io("sd_like");
    expect_err(
        vae.encode(&io["x"]),
        ErrorKind::InvalidArgument,
        &["uses_encoder"],
    );
    // The decoder still works.
    vae.decode(&io["z"]).unwrap();
}

fn saved_model() -> (tempfile::TempDir, PathBuf) {
    let vae = compile(&fixture_dir("sd_like"), fixture_rbln_config("sd_like")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("compiled");
    vae.save_pretrained(&dir).unwrap();
    (tmp, dir)
}

#[test]
fn corrupt_artifact() {
    let (_tmp, dir) = saved_model();
    let p = dir.join("decoder.rbln");
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&p, &bytes).unwrap();
    expect_err(load(&dir), ErrorKind::InvalidArgument, &["decoder.rbln"]);
}

#[test]
fn artifact_of_another_format_version() {
    let (_tmp, dir) = saved_model();
    let p = dir.join("decoder.rbln");
    let mut bytes = std::fs::read(&p).unwrap();
    // rbln-npu's header: 8-byte magic, then the format version as a little-endian u32.
    assert_eq!(&bytes[..8], b"RBLNNPU\0");
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    expect_err(
        load(&dir),
        ErrorKind::Unsupported,
        &["decoder.rbln", "version 99"],
    );
}

#[test]
fn truncated_artifact() {
    let (_tmp, dir) = saved_model();
    let p = dir.join("encoder.rbln");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    expect_err(load(&dir), ErrorKind::InvalidArgument, &["encoder.rbln"]);
}

#[test]
fn missing_artifact() {
    let (_tmp, dir) = saved_model();
    std::fs::remove_file(dir.join("encoder.rbln")).unwrap();
    expect_err(load(&dir), ErrorKind::NotFound, &["encoder.rbln"]);
}

#[test]
fn frozen_compile_time_field_on_load() {
    let (_tmp, dir) = saved_model();
    let (backend, _) = counting_backend();
    let r = RBLNAutoencoderKL::from_pretrained(
        &dir,
        Export::No,
        json!({}),
        json!({"batch_size": 3}),
        backend,
        &no_progress(),
    );
    expect_err(r, ErrorKind::InvalidArgument, &["batch_size", "3", "1"]);
    // The same value spelled differently is not a conflict.
    let meta = fixture_meta("sd_like");
    let (backend, _) = counting_backend();
    RBLNAutoencoderKL::from_pretrained(
        &dir,
        Export::No,
        json!({"sample_size": meta["sample_size"][0]}),
        json!({}),
        backend,
        &no_progress(),
    )
    .expect("equal value in another spelling must load");
}

#[test]
fn save_never_leaves_partial_directory() {
    let vae = compile(&fixture_dir("sd_like"), fixture_rbln_config("sd_like")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // The target's parent is a file: saving must fail and leave nothing behind.
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    assert!(vae.save_pretrained(blocker.join("out")).is_err());
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("file")]);
    // Overwriting an existing compiled dir works and keeps it loadable.
    let out = tmp.path().join("out");
    vae.save_pretrained(&out).unwrap();
    vae.save_pretrained_overwrite(&out).unwrap();
    load(&out).unwrap();
    let leftovers = std::fs::read_dir(tmp.path()).unwrap().count();
    assert_eq!(leftovers, 2, "only 'file' and 'out' remain");
}

/// Names of the entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Rewrites the weights file's header with `edit` applied to its JSON (the data is kept), or,
/// for `Raw`, replaces the whole file.
enum Damage {
    Header(fn(&mut serde_json::Map<String, Value>) -> String),
    Raw(fn(Vec<u8>) -> Vec<u8>),
}

fn damage_weights(dir: &Path, how: &Damage) -> String {
    let p = dir.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let (out, tensor) = match how {
        Damage::Raw(f) => (f(bytes), String::new()),
        Damage::Header(f) => {
            let mut h: serde_json::Map<String, Value> =
                serde_json::from_slice(&bytes[8..8 + n]).unwrap();
            let tensor = f(&mut h);
            let text = serde_json::to_string(&h).unwrap();
            let mut out = (text.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(&bytes[8 + n..]);
            (out, tensor)
        }
    };
    std::fs::write(&p, out).unwrap();
    tensor
}

/// The first tensor of the header (by name) that is not `__metadata__`.
fn first_tensor(h: &serde_json::Map<String, Value>) -> String {
    h.keys().find(|k| *k != "__metadata__").unwrap().clone()
}

/// Safetensors problems name the file and the tensor: a header length beyond the file, a
/// tensor whose dtype x shape disagrees with its byte length (the crate's
/// `TensorInvalidInfo`), a header that is not JSON (`InvalidHeaderDeserialization`), a tensor
/// whose bytes overlap another's, and a key given twice (the crate said `InvalidOffset` of
/// another tensor).
#[test]
fn safetensors_problems_name_the_file_and_tensor() {
    let cases: [(&str, Damage, &[&str]); 5] = [
        (
            "header length beyond the file",
            Damage::Raw(|mut b| {
                b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
                b
            }),
            &["header length 1099511627776 is larger than"],
        ),
        (
            "dtype and shape disagree with the byte length",
            Damage::Header(|h| {
                let t = first_tensor(h);
                let shape = h[&t]["shape"].as_array().unwrap().clone();
                let mut bigger = shape;
                bigger.push(json!(2));
                h.get_mut(&t).unwrap()["shape"] = Value::Array(bigger);
                t
            }),
            &["need", "bytes but data_offsets"],
        ),
        (
            "header not JSON",
            Damage::Raw(|mut b| {
                b[8] = b'#';
                b
            }),
            &["the header is not a JSON object"],
        ),
        (
            "overlapping tensors",
            Damage::Header(|h| {
                let mut names: Vec<String> =
                    h.keys().filter(|k| *k != "__metadata__").cloned().collect();
                names.sort_by_key(|k| h[k]["data_offsets"][0].as_u64().unwrap());
                let (a, b) = (&names[0], &names[1]);
                let a_off = h[a]["data_offsets"].clone();
                let len = h[b]["data_offsets"][1].as_u64().unwrap()
                    - h[b]["data_offsets"][0].as_u64().unwrap();
                let start = a_off[0].as_u64().unwrap();
                h.get_mut(b).unwrap()["data_offsets"] = json!([start, start + len]);
                h.get_mut(b).unwrap()["shape"] = json!([len / 2]);
                h.get_mut(b).unwrap()["dtype"] = json!("F16");
                b.clone()
            }),
            &["overlaps tensor"],
        ),
        (
            "duplicate key",
            Damage::Raw(|b| {
                // Repeat the first entry of the header object under the same key.
                let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
                let text = std::str::from_utf8(&b[8..8 + n]).unwrap().trim_end();
                let h: serde_json::Map<String, Value> = serde_json::from_str(text).unwrap();
                let (k, v) = h.iter().find(|(k, _)| *k != "__metadata__").unwrap();
                let dup = format!("{{{}:{},{}", json!(k), v, &text[1..]);
                let mut out = (dup.len() as u64).to_le_bytes().to_vec();
                out.extend_from_slice(dup.as_bytes());
                out.extend_from_slice(&b[8 + n..]);
                out
            }),
            &["appears twice in the header"],
        ),
    ];
    for (what, how, needles) in &cases {
        let (_tmp, dir) = scratch_copy("sd_like");
        let tensor = damage_weights(&dir, how);
        let mut all: Vec<&str> = vec!["diffusion_pytorch_model.safetensors"];
        all.extend_from_slice(needles);
        if !tensor.is_empty() {
            all.push(&tensor);
        }
        let e = compile(&dir, json!({})).err().expect(what);
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{what}: {e}");
        for n in &all {
            assert!(
                e.message().contains(n),
                "{what}: {e} does not mention {n:?}"
            );
        }
    }
}

/// Sizes that cannot run are compile errors naming the fields and the bytes, before anything
/// is allocated: config.json's layers_per_block (bounded before the key list is built), a
/// batch_size or sample_size whose arena exceeds the memory budget, and an explicit budget.
#[test]
fn sizes_that_cannot_run_are_named_errors() {
    let (_tmp, dir) = scratch_copy("sd_like");
    let p = dir.join("config.json");
    let good = std::fs::read(&p).unwrap();
    let mut cfg: Value = serde_json::from_slice(&good).unwrap();
    cfg["layers_per_block"] = json!(1_000_000_000u64);
    std::fs::write(&p, serde_json::to_vec(&cfg).unwrap()).unwrap();
    expect_err(
        compile(&dir, json!({})),
        ErrorKind::InvalidArgument,
        &[
            "config.json",
            "layers_per_block",
            "1000000000",
            "limit of 64",
        ],
    );
    std::fs::write(&p, &good).unwrap();
    let cases: [(Value, &[&str]); 3] = [
        (
            json!({"batch_size": 1_000_000_000u64}),
            &[
                "batch_size 1000000000",
                "bytes of memory to run",
                "memory budget",
            ],
        ),
        (
            json!({"sample_size": 1_048_576}),
            // Its attention scores alone overflow the address space (the sd_like fixture).
            &["sample_size [1048576, 1048576]", "bytes"],
        ),
        (
            json!({"memory_budget": 1000}),
            &[
                "memory budget of 1000 bytes",
                "memory_budget option",
                "batch_size 1",
            ],
        ),
    ];
    for (cfg, needles) in cases {
        expect_err(compile(&dir, cfg), ErrorKind::InvalidArgument, needles);
    }
}

/// A compiled directory without rbln_config.json says so; an unknown key in its
/// rbln_config.json is an error naming the file and the key; an artifact that cannot be
/// allocated (edited and re-checksummed) fails to load with the budget error naming the file.
#[test]
fn compiled_directory_problems_are_named() {
    let (_tmp, dir) = saved_model();
    let rc = dir.join("rbln_config.json");
    let stored = std::fs::read(&rc).unwrap();
    std::fs::remove_file(&rc).unwrap();
    let (backend, _) = counting_backend();
    let auto = RBLNAutoencoderKL::from_pretrained(
        &dir,
        Export::Auto,
        json!({}),
        json!({}),
        backend,
        &no_progress(),
    );
    expect_err(
        auto,
        ErrorKind::NotFound,
        &["rbln_config.json does not exist", "decoder.rbln"],
    );
    let mut v: Value = serde_json::from_slice(&stored).unwrap();
    v["batch_sise"] = json!(2);
    std::fs::write(&rc, serde_json::to_vec(&v).unwrap()).unwrap();
    expect_err(
        load(&dir),
        ErrorKind::InvalidArgument,
        &["rbln_config.json", "batch_sise", &dir.display().to_string()],
    );
    std::fs::write(&rc, &stored).unwrap();
    let art = dir.join("decoder.rbln");
    let mut p = rbln_npu::artifact::decode(&std::fs::read(&art).unwrap()).unwrap();
    p.target.memory_budget = Some(u64::MAX);
    p.memory.as_mut().unwrap().arena_len = 1 << 60;
    std::fs::write(&art, rbln_npu::artifact::encode(&p).unwrap()).unwrap();
    expect_err(
        load(&dir),
        ErrorKind::InvalidArgument,
        &[
            "decoder.rbln",
            "batch_size",
            "bytes of memory to run",
            "memory budget",
        ],
    );
}

/// Saving never deletes what it did not write: not into the directory the model came from,
/// not over an existing directory without overwrite, and with overwrite not over one that
/// holds anything but a previous compile. Each refusal leaves the target exactly as it was.
#[test]
fn saving_never_deletes_what_it_did_not_write() {
    let (_tmp, src) = scratch_copy("sd_like");
    let vae = compile(&src, fixture_rbln_config("sd_like")).unwrap();
    let before = entries(&src);
    for r in [
        vae.save_pretrained(&src),
        vae.save_pretrained_overwrite(&src),
    ] {
        expect_err(r, ErrorKind::InvalidArgument, &["loaded from"]);
        assert_eq!(entries(&src), before);
    }
    let root = tempfile::tempdir().unwrap();
    let other = root.path().join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("todo.txt"), b"keep me").unwrap();
    expect_err(
        vae.save_pretrained(&other),
        ErrorKind::InvalidArgument,
        &["already exists", "overwrite"],
    );
    expect_err(
        vae.save_pretrained_overwrite(&other),
        ErrorKind::InvalidArgument,
        &["not a compiled directory", "todo.txt"],
    );
    assert_eq!(entries(&other), ["todo.txt"]);
    assert_eq!(std::fs::read(other.join("todo.txt")).unwrap(), b"keep me");
    // A previous compile with an extra file is not replaced either.
    let out = root.path().join("out");
    vae.save_pretrained(&out).unwrap();
    std::fs::write(out.join("README"), b"mine").unwrap();
    let e = vae.save_pretrained_overwrite(&out).unwrap_err();
    assert!(e.message().contains("README"), "{e}");
    assert!(out.join("README").exists());
    std::fs::remove_file(out.join("README")).unwrap();
    vae.save_pretrained_overwrite(&out).unwrap();
    load(&out).unwrap();
    assert_eq!(
        entries(root.path()),
        ["notes", "out"],
        "no temporary left behind"
    );
}
