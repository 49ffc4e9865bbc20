use super::*;
use plugin_api::ErrorKind;

const SD15: &str = r#"{
  "_class_name": "AutoencoderKL",
  "_diffusers_version": "0.6.0",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 512,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}"#;

fn err(text: &str) -> PluginError {
    AutoencoderKLConfig::from_json_str(text).unwrap_err()
}

#[test]
fn sd15_config_with_defaults() {
    let c = AutoencoderKLConfig::from_json_str(SD15).unwrap();
    assert_eq!(c.block_out_channels, vec![128, 256, 512, 512]);
    assert_eq!(c.layers_per_block, 2);
    assert_eq!(c.sample_size, (512, 512));
    assert_eq!(c.vae_scale_factor(), 8);
    assert_eq!(c.act_fn, Activation::Silu);
    // Defaults not in the file.
    assert_eq!(c.scaling_factor, 0.18215);
    assert_eq!(c.shift_factor, None);
    assert!(c.force_upcast && c.use_quant_conv && c.use_post_quant_conv);
    assert!(c.mid_block_add_attention);
}

#[test]
fn empty_config_is_diffusers_default() {
    let c = AutoencoderKLConfig::from_json_str("{}").unwrap();
    assert_eq!(c.block_out_channels, vec![64]);
    assert_eq!(c.layers_per_block, 1);
    assert_eq!(c.latent_channels, 4);
    assert_eq!(c.norm_num_groups, 32);
    assert_eq!(c.sample_size, (32, 32));
    assert_eq!(c.vae_scale_factor(), 1);
}

#[test]
fn sd3_style_fields_and_rect_sample_size() {
    let c = AutoencoderKLConfig::from_json_str(
        r#"{"latent_channels": 16, "shift_factor": 0.0609, "scaling_factor": 1.5305,
            "use_quant_conv": false, "use_post_quant_conv": false, "sample_size": [768, 512],
            "act_fn": "swish", "latents_mean": null}"#,
    )
    .unwrap();
    assert_eq!(c.shift_factor, Some(0.0609));
    assert_eq!(c.sample_size, (768, 512));
    assert!(!c.use_quant_conv && !c.use_post_quant_conv);
    assert_eq!(c.act_fn, Activation::Silu);
}

#[test]
fn unsupported_block_type_names_field_and_value() {
    let e = err(r#"{"down_block_types": ["AttnDownEncoderBlock2D"]}"#);
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message().contains("config.json"), "{e}");
    assert!(e.message().contains("down_block_types[0]"), "{e}");
    assert!(e.message().contains("AttnDownEncoderBlock2D"), "{e}");
}

#[test]
fn inconsistent_lengths() {
    let e = err(r#"{"block_out_channels": [32, 64]}"#);
    assert!(e.message().contains("down_block_types"), "{e}");
    assert!(e.message().contains("has 1 entries"), "{e}");
}

#[test]
fn groups_must_divide_channels() {
    let e = err(
        r#"{"block_out_channels": [64, 100], "down_block_types": ["DownEncoderBlock2D","DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D","UpDecoderBlock2D"]}"#,
    );
    assert!(
        e.message()
            .contains("norm_num_groups (32) must divide block_out_channels[1] (100)"),
        "{e}"
    );
}

#[test]
fn bad_activation_and_non_positive_values() {
    let e = err(r#"{"act_fn": "tanh"}"#);
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message().contains("act_fn") && e.message().contains("tanh"));
    for (field, text) in [
        ("in_channels", r#"{"in_channels": 0}"#),
        ("latent_channels", r#"{"latent_channels": -4}"#),
        ("layers_per_block", r#"{"layers_per_block": 0}"#),
        ("norm_num_groups", r#"{"norm_num_groups": 0}"#),
        ("block_out_channels", r#"{"block_out_channels": []}"#),
        ("sample_size", r#"{"sample_size": 0}"#),
    ] {
        let e = err(text);
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message().contains(field), "{field}: {e}");
        assert!(e.message().contains("config.json"), "{e}");
    }
}

#[test]
fn malformed_json_and_wrong_types() {
    let e = err(r#"{"in_channels": "three"}"#);
    assert!(e.message().contains("config.json"), "{e}");
    let e = err("{");
    assert!(e.message().contains("config.json"), "{e}");
    let e = err(r#"{"latents_mean": [1.0, 2.0]}"#);
    assert!(e.message().contains("latents_mean"), "{e}");
}

#[test]
fn from_dir_missing_file_is_not_found() {
    let dir = std::env::temp_dir().join("rbln-vae-no-such-dir-for-test");
    let e = AutoencoderKLConfig::from_dir(&dir).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message().contains("config.json"), "{e}");
}

#[test]
fn to_json_round_trips() {
    let c = AutoencoderKLConfig::from_json_str(SD15).unwrap();
    let back = AutoencoderKLConfig::from_json_str(&c.to_json().to_string()).unwrap();
    assert_eq!(back, c);
    assert_eq!(c.to_json()["_class_name"], "AutoencoderKL");
}

/// Architecture fields are bounded before anything is sized from them: `layers_per_block:
/// 1000000000` would otherwise list a billion resnets per block.
#[test]
fn architecture_fields_are_bounded() {
    let nine = serde_json::json!([32, 32, 32, 32, 32, 32, 32, 32, 32]);
    for (field, value, needle) in [
        (
            "layers_per_block",
            serde_json::json!(1000000000),
            "layers_per_block: 1000000000 exceeds the limit of 64",
        ),
        (
            "latent_channels",
            serde_json::json!(100000),
            "latent_channels: 100000 exceeds the limit of 16384",
        ),
        (
            "block_out_channels",
            nine,
            "block_out_channels: 9 blocks exceed the limit of 8",
        ),
        (
            "block_out_channels",
            serde_json::json!([1048576, 512, 512, 512]),
            "block_out_channels[0]: 1048576 exceeds",
        ),
    ] {
        let mut cfg: serde_json::Value = serde_json::from_str(SD15).unwrap();
        cfg[field] = value;
        let e = err(&cfg.to_string());
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message().contains(needle), "{field}: {e}");
        assert!(e.message().starts_with("config.json"), "{e}");
    }
}
