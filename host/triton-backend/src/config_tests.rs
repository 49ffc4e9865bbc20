use super::*;

fn sig() -> MethodSig {
    MethodSig {
        method: "encode".into(),
        input: ("x".into(), vec![3, 32, 32]),
        outputs: vec![
            ("mean".into(), vec![4, 8, 8]),
            ("logvar".into(), vec![4, 8, 8]),
        ],
        batch: 4,
    }
}

fn params(kv: &[(&str, &str)]) -> Value {
    let mut p = Map::new();
    for (k, v) in kv {
        p.insert((*k).into(), json!({"string_value": v}));
    }
    json!({"name": "vae_encode", "backend": "rbln", "parameters": p})
}

#[test]
fn parameters_name_what_to_load() {
    let p = parse_params(&params(&[
        ("method", "encode"),
        ("model_dir", "compiled"),
        ("rbln_config", r#"{"batch_size": 2}"#),
    ]))
    .unwrap();
    assert_eq!(p.method, "encode");
    assert_eq!(p.model_dir.as_deref(), Some("compiled"));
    assert_eq!(p.rbln_config["batch_size"], 2);
    assert_eq!(p.class, None);
}

#[test]
fn hub_ids_take_subfolder_revision_and_variant() {
    let p = parse_params(&params(&[
        ("method", "decode"),
        ("model_dir", "stabilityai/sd-vae"),
        ("subfolder", "vae"),
        ("revision", "v1.0"),
        ("variant", "fp16"),
    ]))
    .unwrap();
    assert_eq!(p.model_dir.as_deref(), Some("stabilityai/sd-vae"));
    assert_eq!(p.subfolder.as_deref(), Some("vae"));
    assert_eq!(p.revision.as_deref(), Some("v1.0"));
    assert_eq!(p.variant.as_deref(), Some("fp16"));
    let source = crate::model::source(&p, "1");
    assert_eq!(source.id, "stabilityai/sd-vae");
    let mut kwargs = Map::new();
    source.add_variant(&mut kwargs);
    assert_eq!(kwargs["variant"], "fp16");
}

#[test]
fn bad_parameters_say_what_is_wrong() {
    let cases = [
        (params(&[]), "parameter \"method\" is missing"),
        (
            params(&[("method", "roundtrip")]),
            "\"roundtrip\"; it must be \"encode\" or \"decode\"",
        ),
        (
            params(&[("method", "decode"), ("modeldir", "x")]),
            "unknown parameter \"modeldir\" (accepted: method, model_dir",
        ),
        (
            params(&[("method", "decode"), ("rbln_config", "{batch_size: 2}")]),
            "parameter \"rbln_config\" is not valid JSON",
        ),
        (
            params(&[("method", "decode"), ("rbln_config", "[1]")]),
            "must be a JSON object, got [1]",
        ),
        (
            json!({"parameters": {"method": {"int_value": 1}}}),
            "parameter \"method\" has no string_value",
        ),
    ];
    for (cfg, want) in cases {
        let e = parse_params(&cfg).unwrap_err().0;
        assert!(e.contains(want), "{e:?} should contain {want:?}");
    }
}

#[test]
fn auto_complete_fills_only_what_is_missing() {
    let cfg = params(&[("method", "encode")]);
    let done = auto_complete(&cfg, &sig()).unwrap();
    assert_eq!(done["max_batch_size"], 4);
    assert_eq!(
        done["input"],
        json!([{"name": "x", "data_type": "TYPE_FP32", "dims": [3, 32, 32]}])
    );
    assert_eq!(done["output"][1]["name"], "logvar");
    assert_eq!(check(&done, &sig()).unwrap().outputs, ["mean", "logvar"]);
    // Complete already (Triton writes int64 as strings): nothing to fill.
    let mut given = done.clone();
    given["max_batch_size"] = json!(2);
    given["input"][0]["dims"] = json!(["3", "32", "32"]);
    assert_eq!(auto_complete(&given, &sig()), None);
    assert_eq!(check(&given, &sig()).unwrap().max_batch_size, 2);
}

#[test]
fn check_refuses_what_the_compiled_model_cannot_serve() {
    let done = auto_complete(&params(&[("method", "encode")]), &sig()).unwrap();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut c = done.clone();
        f(&mut c);
        check(&c, &sig()).unwrap_err().0
    };
    let e = edit(&|c| c["max_batch_size"] = json!(8));
    assert!(
        e.contains("max_batch_size is 8; it must be between 1 and the compiled batch_size 4"),
        "{e}"
    );
    let e = edit(&|c| c["input"][0]["dims"] = json!([3, 64, 64]));
    assert!(
        e.contains("input \"x\": dims are [3, 64, 64]; the model was compiled for [3, 32, 32]"),
        "{e}"
    );
    let e = edit(&|c| c["input"][0]["data_type"] = json!("TYPE_FP16"));
    assert!(e.contains("data_type is TYPE_FP16"), "{e}");
    let e = edit(&|c| c["input"][0]["name"] = json!("z"));
    assert!(
        e.contains("input \"z\": the compiled model's input is named \"x\""),
        "{e}"
    );
    let e = edit(&|c| c["output"][0]["name"] = json!("sample"));
    assert!(
        e.contains("output \"sample\": encode has no such output (it has: mean, logvar)"),
        "{e}"
    );
    let e = edit(&|c| c["input"] = json!([]));
    assert!(
        e.contains("encode takes one input `x`; the configuration declares 0"),
        "{e}"
    );
    // A subset of the outputs is fine.
    let mut c = done.clone();
    c["output"] = json!([done["output"][0]]);
    assert_eq!(check(&c, &sig()).unwrap().outputs, ["mean"]);
}

#[test]
fn api_version_major_must_match_and_minor_be_new_enough() {
    assert!(check_api_version(1, 19).is_ok());
    assert!(check_api_version(1, 22).is_ok());
    let e = check_api_version(2, 0).unwrap_err();
    assert!(
        e.contains("built for TRITONBACKEND API 1.19") && e.contains("provides API 2.0"),
        "{e}"
    );
    let e = check_api_version(1, 17).unwrap_err();
    assert!(
        e.contains("needs TRITONBACKEND API 1.19") && e.contains("only 1.17"),
        "{e}"
    );
}
