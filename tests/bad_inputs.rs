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
    let (backend, _) = counting_backend();
    RBLNAutoencoderKL::from_pretrained(
        dir,
        Export::No,
        json!({}),
        json!({}),
        backend,
        &no_progress(),
    )
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
