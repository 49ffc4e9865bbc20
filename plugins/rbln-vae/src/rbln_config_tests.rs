use super::*;
use crate::testing::tiny_config;
use plugin_api::ErrorKind;

fn sd15() -> AutoencoderKLConfig {
    AutoencoderKLConfig::from_json_str(
        r#"{"block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D"],
            "layers_per_block": 2, "sample_size": 512}"#,
    )
    .unwrap()
}

fn user(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap()
}

fn export(text: &str) -> Result<RBLNAutoencoderKLConfig, PluginError> {
    RBLNAutoencoderKLConfig::for_export(&user(text), &sd15())
}

#[test]
fn defaults_from_diffusers_config() {
    let c = export("{}").unwrap();
    assert_eq!(c.batch_size, 1);
    assert_eq!(c.sample_size, (512, 512));
    assert!(!c.uses_encoder);
    assert_eq!(c.vae_scale_factor, 8);
    assert_eq!((c.in_channels, c.latent_channels), (3, 4));
    assert_eq!(c.latent_shape(), vec![1, 4, 64, 64]);
    assert_eq!(c.runtime, RuntimeOptions::default());
    assert!(c.runtime.create_runtimes);
    assert_eq!(c.parts().len(), 1);
    assert_eq!(c.compile_options_json(), "{}");
}

#[test]
fn values_and_spellings() {
    let c = export(
        r#"{"batch_size": 2, "sample_size": [768, 512], "uses_encoder": true,
        "vae_scale_factor": 8.0, "in_channels": 3, "npu": "RBLN-CA25", "num_devices": 1,
        "device": [0], "device_map": {"encoder": 0, "decoder": 0}, "create_runtimes": false,
        "activate_profiler": true, "timeout": 60, "dtype": "float32", "batch_size_ignored": null}"#,
    );
    // A null value counts as not given, even for an unknown key.
    let c = c.unwrap();
    assert_eq!(c.image_input_shape(), vec![2, 3, 768, 512]);
    assert_eq!(c.latent_shape(), vec![2, 4, 96, 64]);
    assert!(!c.runtime.create_runtimes);
    assert_eq!(c.runtime.timeout, Some(60.0));
    assert_eq!(
        c.compile_options_json(),
        r#"{"npu":"RBLN-CA25","num_devices":1}"#
    );
    assert_eq!(
        export(r#"{"sample_size": 256}"#).unwrap().sample_size,
        (256, 256)
    );
}

#[test]
fn validation_errors_name_field_and_value() {
    let cases = [
        (
            r#"{"batch_size": 0}"#,
            "batch_size must be a positive integer, got 0",
        ),
        (
            r#"{"batch_size": -1}"#,
            "batch_size must be a positive integer, got -1",
        ),
        (
            r#"{"batch_size": 1.5}"#,
            "batch_size must be a positive integer, got 1.5",
        ),
        (
            r#"{"sample_size": [512, 500]}"#,
            "multiples of vae_scale_factor (8)",
        ),
        (r#"{"sample_size": [512]}"#, "sample_size must be"),
        (r#"{"sample_size": 0}"#, "sample_size must be"),
        (
            r#"{"latent_channels": 16}"#,
            "latent_channels: 16 was given but config.json implies 4",
        ),
        (r#"{"in_channels": 1}"#, "in_channels: 1 was given"),
        (
            r#"{"vae_scale_factor": 16}"#,
            "vae_scale_factor: 16 was given but config.json implies 8",
        ),
        (
            r#"{"unknown_key": 3, "other": 1}"#,
            "Unexpected arguments: unknown_key, other",
        ),
        (r#"{"device": -1}"#, "device must be a device index"),
        (r#"{"device": [0, 2, 0]}"#, "device 0 is listed twice"),
        (
            r#"{"device_map": {"encoder": 0, "unet": 0}}"#,
            "device_map: unknown part 'unet'",
        ),
        (
            r#"{"device_map": {"decoder": "a"}}"#,
            "device_map.decoder must be a device index",
        ),
        (r#"{"timeout": -5}"#, "timeout must be a positive number"),
        (
            r#"{"create_runtimes": "yes"}"#,
            "create_runtimes must be true or false",
        ),
        (
            r#"{"dtype": "int8"}"#,
            "dtype \"int8\" is not a known dtype",
        ),
        (
            r#"{"cls_name": "RBLNUNet2DConditionModelConfig"}"#,
            "cls_name must be",
        ),
    ];
    for (text, want) in cases {
        let e = export(text).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{text}: {e}");
        assert!(e.message().contains(want), "{text}: {e}");
    }
    for dt in ["float16", "bfloat16"] {
        let e = export(&format!(r#"{{"dtype": "{dt}"}}"#)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(
            e.message().contains(dt) && e.message().contains("float32"),
            "{e}"
        );
    }
}

#[test]
fn kwargs_win_over_rbln_config() {
    let m = merge_user_config(
        &serde_json::json!({"batch_size": 2, "uses_encoder": true}),
        &serde_json::json!({"batch_size": 4}),
    )
    .unwrap();
    let c = RBLNAutoencoderKLConfig::for_export(&m, &sd15()).unwrap();
    assert_eq!(c.batch_size, 4);
    assert!(c.uses_encoder);
    assert!(merge_user_config(&serde_json::json!([1]), &Value::Null).is_err());
    assert!(merge_user_config(&Value::Null, &Value::Null)
        .unwrap()
        .is_empty());
}

#[test]
fn serialization_key_order_and_content() {
    let c = export(r#"{"uses_encoder": true, "device": 0}"#).unwrap();
    let text = c.to_json_string();
    let keys: Vec<String> = c.to_json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "cls_name",
            "dtype",
            "optimum_rbln_version",
            "_compile_cfgs",
            "batch_size",
            "uses_encoder",
            "vae_scale_factor",
            "in_channels",
            "latent_channels",
            "sample_size"
        ]
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["_compile_cfgs"],
        serde_json::json!([
            {"compiled_model_name": "encoder", "input_info": [["x", [1, 3, 512, 512], "float32"]], "npu": null, "num_devices": null},
            {"compiled_model_name": "decoder", "input_info": [["z", [1, 4, 64, 64], "float32"]], "npu": null, "num_devices": null}
        ])
    );
    let cfg_keys: Vec<&String> = v["_compile_cfgs"][0].as_object().unwrap().keys().collect();
    assert_eq!(
        cfg_keys,
        ["compiled_model_name", "input_info", "npu", "num_devices"]
    );
    assert_eq!(v["sample_size"], serde_json::json!([512, 512]));
    assert!(v["optimum_rbln_version"]
        .as_str()
        .unwrap()
        .starts_with("rbln-vae "));
    assert!(
        !text.contains("\"device\""),
        "runtime options are never written: {text}"
    );
    assert!(text.contains("\n  \"dtype\""), "pretty printed: {text}");
}

#[test]
fn load_round_trip_and_frozen_fields() {
    let c = export(r#"{"uses_encoder": true, "batch_size": 2, "npu": "RBLN-CA25"}"#).unwrap();
    let stored = c.to_json();
    let back = RBLNAutoencoderKLConfig::for_load(&stored, &Map::new()).unwrap();
    assert_eq!(back, c);
    // Same values in other spellings, and runtime options, are accepted.
    let ok = RBLNAutoencoderKLConfig::for_load(
        &stored,
        &user(
            r#"{"sample_size": 512, "batch_size": 2, "vae_scale_factor": 8.0, "npu": "RBLN-CA25",
                  "create_runtimes": false, "timeout": 5}"#,
        ),
    )
    .unwrap();
    assert!(!ok.runtime.create_runtimes);
    for (text, field) in [
        (r#"{"batch_size": 1}"#, "batch_size"),
        (r#"{"sample_size": [256, 256]}"#, "sample_size"),
        (r#"{"uses_encoder": false}"#, "uses_encoder"),
        (r#"{"npu": "RBLN-CA12"}"#, "npu"),
        (r#"{"latent_channels": 8}"#, "latent_channels"),
    ] {
        let e = RBLNAutoencoderKLConfig::for_load(&stored, &user(text)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message().starts_with(field), "{e}");
        assert!(e.message().contains("compiled with"), "{e}");
    }
    let e =
        RBLNAutoencoderKLConfig::for_load(&stored, &user(r#"{"sample_size": 256}"#)).unwrap_err();
    assert!(
        e.message().contains("[512,512]") && e.message().contains("[256,256]"),
        "{e}"
    );
}

#[test]
fn corrupt_stored_configs() {
    let good = export("{}").unwrap().to_json();
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("batch_size");
    let e = RBLNAutoencoderKLConfig::for_load(&missing, &Map::new()).unwrap_err();
    assert!(
        e.message().contains("rbln_config.json") && e.message().contains("batch_size"),
        "{e}"
    );
    let mut wrong_cls = good.clone();
    wrong_cls["cls_name"] = "RBLNUNetConfig".into();
    assert!(RBLNAutoencoderKLConfig::for_load(&wrong_cls, &Map::new()).is_err());
    let mut inconsistent = good.clone();
    inconsistent["batch_size"] = 3.into();
    let e = RBLNAutoencoderKLConfig::for_load(&inconsistent, &Map::new()).unwrap_err();
    assert!(e.message().contains("_compile_cfgs"), "{e}");
}

#[test]
fn tiny_config_sample_size_default() {
    let c = RBLNAutoencoderKLConfig::for_export(&Map::new(), &tiny_config("{}")).unwrap();
    assert_eq!((c.sample_size, c.vae_scale_factor), ((16, 16), 2));
}

/// An unknown key in a stored `rbln_config.json` is refused as in a user's `rbln_config`,
/// naming the file and the key.
#[test]
fn unknown_stored_keys_are_refused() {
    let mut stored = export("{}").unwrap().to_json();
    stored["batch_sise"] = 2.into();
    let e = RBLNAutoencoderKLConfig::for_load(&stored, &Map::new()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(
        e.message()
            .starts_with("rbln_config.json: Unexpected arguments: batch_sise"),
        "{e}"
    );
}

/// `memory_budget` goes to the compiler, is written only when given, and is frozen on load.
#[test]
fn memory_budget_is_a_compile_time_field() {
    assert!(export("{}")
        .unwrap()
        .to_json()
        .get("memory_budget")
        .is_none());
    let c = export(r#"{"memory_budget": 1000000}"#).unwrap();
    assert_eq!(c.compile_options_json(), r#"{"memory_budget":1000000}"#);
    let stored = c.to_json();
    assert_eq!(stored["memory_budget"], 1000000);
    let back = RBLNAutoencoderKLConfig::for_load(&stored, &Map::new()).unwrap();
    assert_eq!(back.memory_budget, Some(1000000));
    let e =
        RBLNAutoencoderKLConfig::for_load(&stored, &user(r#"{"memory_budget": 5}"#)).unwrap_err();
    assert!(e.message().starts_with("memory_budget"), "{e}");
    for bad in ["0", "-1", "1.5", "\"1GB\""] {
        let e = export(&format!(r#"{{"memory_budget": {bad}}}"#)).unwrap_err();
        assert!(
            e.message()
                .contains("memory_budget must be a positive number of bytes"),
            "{e}"
        );
    }
}

#[test]
fn sample_size_lists() {
    let c = export(r#"{"sample_size": [[1024, 1024], [1152, 896], 768]}"#).unwrap();
    assert_eq!(c.sample_size, (1024, 1024));
    assert_eq!(c.sample_sizes, vec![(1024, 1024), (1152, 896), (768, 768)]);
    assert_eq!(
        c.to_json()["sample_size"],
        json!([[1024, 1024], [1152, 896], [768, 768]])
    );
    // One size is written as before; a list of one equals it.
    assert_eq!(
        export(r#"{"sample_size": [[512, 768]]}"#)
            .unwrap()
            .to_json()["sample_size"],
        json!([512, 768])
    );
    for (bad, says) in [
        (r#"{"sample_size": [[512, 512], 512]}"#, "twice"),
        (r#"{"sample_size": []}"#, "empty"),
        (r#"{"sample_size": [[512, 516]]}"#, "[512, 516]"),
        (r#"{"sample_size": [[512, 0]]}"#, "sample_size"),
    ] {
        let e = export(bad).unwrap_err();
        assert!(e.message().contains(says), "{bad}: {e}");
    }
    // The stored list is frozen on load, compared as values.
    let stored = export(r#"{"sample_size": [[512, 512], [768, 512]]}"#)
        .unwrap()
        .to_json();
    let load = |u: &str| RBLNAutoencoderKLConfig::for_load(&stored, &user(u));
    assert!(load(r#"{"sample_size": [512, [768, 512]]}"#).is_ok());
    let e = load(r#"{"sample_size": 512}"#).unwrap_err();
    assert!(e.message().contains("sample_size"), "{e}");
}

#[test]
fn tiling_and_slicing_fields() {
    let c = export(r#"{"tiling": true, "slicing": true}"#).unwrap();
    assert!(c.slicing && c.tiling.enabled);
    // The tile defaults to config.json's sample_size, as in diffusers.
    assert_eq!(c.tiling.tile_sample_min_size, Some(512));
    assert_eq!(c.compiled_sizes(), vec![(512, 512)]);
    let c = export(r#"{"sample_size": 1024, "tiling": {"tile_sample_min_size": 256}}"#).unwrap();
    assert_eq!(c.compiled_sizes(), vec![(1024, 1024), (256, 256)]);
    let stored = c.to_json();
    assert_eq!(stored["tiling"]["tile_sample_min_size"], json!(256));
    let back = RBLNAutoencoderKLConfig::for_load(&stored, &user("{}")).unwrap();
    assert_eq!(back.tiling, c.tiling);
    let e = RBLNAutoencoderKLConfig::for_load(&stored, &user(r#"{"tiling": false}"#)).unwrap_err();
    assert!(e.message().contains("tiling"), "{e}");
    assert!(export(r#"{"tiling": {"tile_sample_min_size": 100}}"#).is_err());
    assert!(export(r#"{"tiling": "yes"}"#).is_err());
    assert!(export(r#"{"slicing": 1}"#).is_err());
}
