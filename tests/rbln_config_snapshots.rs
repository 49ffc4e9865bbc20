//! Snapshots of the `rbln_config.json` that compile writes, for several configurations. Review
//! changes with `cargo insta review`; the key order and values are what users' tools read.

use integration_tests::*;
use plugin_api::Export;
use rbln_vae::RBLNAutoencoderKL;
use serde_json::{json, Value};

fn compiled_config(fixture: &str, rbln_config: Value, kwargs: Value) -> String {
    let (backend, _) = counting_backend();
    let vae = RBLNAutoencoderKL::from_pretrained(
        fixture_dir(fixture),
        Export::Yes,
        rbln_config,
        kwargs,
        backend,
        &no_progress(),
    )
    .unwrap_or_else(|e| panic!("{fixture}: {e}"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    vae.save_pretrained(&out).unwrap();
    let text = std::fs::read_to_string(out.join("rbln_config.json")).unwrap();
    // The writer's version changes with every release; everything else is pinned.
    let v: Value = serde_json::from_str(&text).unwrap();
    let version = v["optimum_rbln_version"].as_str().unwrap().to_string();
    assert!(version.starts_with("rbln-vae "), "{version}");
    text.replace(&version, "[version]")
}

#[test]
fn text_to_image_decoder_only_defaults() {
    insta::assert_snapshot!(compiled_config("sd_like", json!({}), json!({})));
}

#[test]
fn img2img_with_encoder_batch_2() {
    insta::assert_snapshot!(compiled_config(
        "sd_like",
        json!({"uses_encoder": true, "batch_size": 2}),
        json!({})
    ));
}

#[test]
fn sd3_like_16_latent_channels() {
    insta::assert_snapshot!(compiled_config(
        "sd3_like",
        json!({"uses_encoder": true}),
        json!({})
    ));
}

#[test]
fn non_square_grayscale_with_npu_target() {
    insta::assert_snapshot!(compiled_config(
        "odd",
        json!({"uses_encoder": true, "sample_size": [16, 24], "npu": "RBLN-CA25"}),
        json!({})
    ));
}

#[test]
fn kwargs_win_over_rbln_config_and_runtime_options_are_not_written() {
    insta::assert_snapshot!(compiled_config(
        "sd_like",
        json!({"batch_size": 4, "sample_size": 64, "create_runtimes": true, "timeout": 30}),
        json!({"batch_size": 1, "device": 0})
    ));
}

#[test]
fn several_sample_sizes_with_tiling_and_slicing() {
    insta::assert_snapshot!(compiled_config(
        "shapes",
        json!({
            "uses_encoder": true,
            "sample_size": [[32, 32], [24, 40], 16],
            "slicing": true,
            "tiling": {"tile_overlap_factor": 0.25},
        }),
        json!({})
    ));
}
