//! RBLNAutoencoderKL end to end on the scalar reference backend of `support/`, checked against
//! outputs of diffusers itself (fixtures written by `fixtures/make_tiny_vae.py`).

mod support;

use plugin_api::{ErrorKind, Export, NoProgress, Tensor};
use rbln_vae::weights::{parse_safetensors, read_safetensors, WEIGHTS_FILE};
use rbln_vae::{AutoencoderKL, RBLNAutoencoderKL};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-vae")
}

fn io(name: &str) -> Tensor {
    let bytes = std::fs::read(fixture().with_file_name("tiny-vae-io.safetensors")).unwrap();
    let w = parse_safetensors(&bytes).unwrap().remove(name).unwrap();
    Tensor::new(w.shape, w.data).unwrap()
}

fn compile(
    dir: &Path,
    export: Export,
    cfg: Value,
) -> Result<RBLNAutoencoderKL, plugin_api::PluginError> {
    RBLNAutoencoderKL::from_pretrained(
        dir,
        export,
        cfg,
        Value::Null,
        support::backend().0,
        &NoProgress::boxed(),
    )
}

fn full() -> Value {
    json!({"uses_encoder": true, "batch_size": 2, "sample_size": [16, 12]})
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= tol, "{what}: max abs diff {worst} > {tol}");
}

#[test]
fn matches_diffusers_encode_and_decode() {
    let m = compile(&fixture(), Export::Yes, full()).unwrap();
    // torch: moments = vae.quant_conv(vae.encoder(x)); mean, logvar = moments.chunk(2, 1)
    let d = m.encode(&io("x")).unwrap();
    let moments = io("moments");
    let want = rbln_vae::LatentDistribution::from_moments(&moments).unwrap();
    assert_close(d.mean.data(), want.mean.data(), 1e-4, "mean");
    assert_close(d.logvar.data(), want.logvar.data(), 1e-4, "logvar");
    // torch: sample = vae.decode(z).sample
    let s = m.decode(&io("z")).unwrap();
    assert_eq!(s.shape(), vec![2, 3, 16, 12]);
    assert_close(s.data(), io("sample").data(), 1e-4, "sample");
}

#[test]
fn save_load_round_trip() {
    let m = compile(&fixture(), Export::Yes, full()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("compiled");
    m.save_pretrained(&out).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "config.json",
            "decoder.ref",
            "encoder.ref",
            "rbln_config.json"
        ]
    );
    assert!(RBLNAutoencoderKL::is_compiled_dir(&out));
    assert!(!RBLNAutoencoderKL::is_compiled_dir(&fixture()));

    let z = io("z");
    let want = m.decode(&z).unwrap();
    for export in [Export::No, Export::Auto] {
        let loaded = compile(&out, export, json!({"sample_size": [16, 12], "device": 0})).unwrap();
        assert_eq!(loaded.rbln_config(), &{
            let mut c = m.rbln_config().clone();
            c.runtime.device = Some(rbln_vae::DeviceSpec::One(0));
            c
        });
        assert_eq!(loaded.decode(&z).unwrap(), want);
        assert!(loaded.encode(&io("x")).is_ok());
    }
    // A loaded model saves the files it was loaded from (read again, not kept in memory)...
    let loaded = compile(&out, Export::No, Value::Null).unwrap();
    let again = root.path().join("again");
    loaded.save_pretrained(&again).unwrap();
    for f in ["encoder.ref", "decoder.ref"] {
        assert_eq!(
            std::fs::read(again.join(f)).unwrap(),
            std::fs::read(out.join(f)).unwrap(),
            "{f}"
        );
    }
    // ...and refuses, naming the file, when one changed on disk since it was loaded.
    let mut bytes = std::fs::read(again.join("decoder.ref")).unwrap();
    let reloaded = compile(&again, Export::No, Value::Null).unwrap();
    bytes.push(b' ');
    std::fs::write(again.join("decoder.ref"), &bytes).unwrap();
    let e = reloaded
        .save_pretrained(root.path().join("third"))
        .unwrap_err();
    assert!(
        e.message().contains("decoder.ref") && e.message().contains("changed on disk"),
        "{e}"
    );
    assert!(!root.path().join("third").exists(), "nothing written");
    // Frozen compile-time field.
    let e = compile(&out, Export::No, json!({"batch_size": 1}))
        .err()
        .unwrap();
    assert!(
        e.message().contains("batch_size") && e.message().contains("compiled with"),
        "{e}"
    );
    // Export::No on a diffusers directory: no rbln_config.json.
    let e = compile(&fixture(), Export::No, Value::Null).err().unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message().contains("rbln_config.json"), "{e}");
    // A missing artifact is named.
    std::fs::remove_file(out.join("decoder.ref")).unwrap();
    let e = compile(&out, Export::No, Value::Null).err().unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message().contains("decoder.ref"), "{e}");
    // Saving over an existing directory replaces it, when asked to (issue 12: never without).
    assert!(m.save_pretrained(&out).is_err());
    m.save_pretrained_overwrite(&out).unwrap();
    assert!(out.join("decoder.ref").exists());
}

#[test]
fn artifact_shapes_are_checked_at_load() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    compile(&fixture(), Export::Yes, Value::Null)
        .unwrap()
        .save_pretrained(&a)
        .unwrap();
    compile(&fixture(), Export::Yes, json!({"sample_size": 8}))
        .unwrap()
        .save_pretrained(&b)
        .unwrap();
    std::fs::copy(b.join("decoder.ref"), a.join("decoder.ref")).unwrap();
    let e = compile(&a, Export::No, Value::Null).err().unwrap();
    assert!(
        e.message().contains("decoder executable") && e.message().contains("[1, 2, 4, 4]"),
        "{e}"
    );
}

#[test]
fn decoder_only_runtime_and_shape_errors() {
    let (backend, seen) = support::backend();
    let m = RBLNAutoencoderKL::from_pretrained(
        fixture(),
        Export::Auto,
        json!({"npu": "RBLN-CA25"}),
        json!({"create_runtimes": false}),
        backend,
        &NoProgress::boxed(),
    )
    .unwrap();
    assert_eq!(seen.lock().unwrap().as_slice(), [r#"{"npu":"RBLN-CA25"}"#]);
    let e = m.encode(&Tensor::zeros(vec![1, 3, 16, 16])).unwrap_err();
    assert!(
        e.message()
            .contains("uses_encoder=false; recompile with uses_encoder=true"),
        "{e}"
    );
    let e = m.decode(&Tensor::zeros(vec![1, 2, 8, 8])).unwrap_err();
    assert!(e.message().contains("create_runtimes=false"), "{e}");
    // Saving works without runtimes.
    let root = tempfile::tempdir().unwrap();
    m.save_pretrained(root.path().join("c")).unwrap();

    let m = compile(&fixture(), Export::Yes, Value::Null).unwrap();
    let e = m.decode(&Tensor::zeros(vec![1, 2, 8, 6])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(
        e.message().contains("[1, 2, 8, 6]") && e.message().contains("[1, 2, 8, 8]"),
        "{e}"
    );
}

#[test]
fn legacy_and_half_precision_checkpoints() {
    let root = tempfile::tempdir().unwrap();
    let mut w = read_safetensors(&fixture().join(WEIGHTS_FILE)).unwrap();
    let p = "decoder.mid_block.attentions.0";
    for (new, old) in [
        ("to_q", "query"),
        ("to_k", "key"),
        ("to_v", "value"),
        ("to_out.0", "proj_attn"),
    ] {
        let mut wt = w.remove(&format!("{p}.{new}.weight")).unwrap();
        wt.shape.extend([1, 1]);
        w.insert(format!("{p}.{old}.weight"), wt);
        let b = w.remove(&format!("{p}.{new}.bias")).unwrap();
        w.insert(format!("{p}.{old}.bias"), b);
    }
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(fixture().join("config.json")).unwrap()).unwrap();
    let z = io("z");
    let want = io("sample");
    for (name, dtype, tol) in [
        ("legacy", safetensors::Dtype::F32, 1e-4),
        ("bf16", safetensors::Dtype::BF16, 0.1),
    ] {
        let dir = root.path().join(name);
        rbln_vae::testing::write_checkpoint(&dir, &cfg, &w, dtype).unwrap();
        let m = compile(
            &dir,
            Export::Yes,
            json!({"batch_size": 2, "sample_size": [16, 12]}),
        )
        .unwrap();
        assert_close(m.decode(&z).unwrap().data(), want.data(), tol, name);
    }
    // from_model on the in-memory model.
    let model = AutoencoderKL::from_dir(&fixture()).unwrap();
    let m =
        RBLNAutoencoderKL::from_model(model, full(), support::backend().0, &NoProgress::boxed())
            .unwrap();
    assert_close(
        m.decode(&z).unwrap().data(),
        want.data(),
        1e-4,
        "from_model",
    );
}

#[test]
fn plugin_model_class() {
    use plugin_api::abi_stable::std_types::{RStr, RVec};
    use plugin_api::NamedTensor;
    let class = rbln_vae::model_class_box();
    assert_eq!(class.name().as_str(), "RBLNAutoencoderKL");
    let dir = fixture();
    let model = class
        .from_pretrained(
            RStr::from(dir.to_str().unwrap()),
            Export::Yes,
            RStr::from(r#"{"uses_encoder": true, "batch_size": 2}"#),
            RStr::from(r#"{"sample_size": [16, 12]}"#),
            support::backend().0,
            &NoProgress::boxed(),
        )
        .into_result()
        .unwrap();
    let methods: Vec<String> = model.methods().iter().map(|m| m.name.to_string()).collect();
    assert_eq!(methods, ["encode", "decode"]);
    assert_eq!(
        model.methods()[0].outputs[1].shape.as_slice(),
        &[2, 2, 8, 6]
    );
    let x = RVec::from(vec![NamedTensor::new("x", io("x"))]);
    let out = model
        .call(
            RStr::from("encode"),
            x.clone(),
            RStr::from(r#"{"seed": 3}"#),
        )
        .into_result()
        .unwrap();
    let names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["mean", "logvar", "sample"]);
    let out = model
        .call(RStr::from("encode"), x, RStr::from(""))
        .into_result()
        .unwrap();
    assert_eq!(out.len(), 2);
    let z = RVec::from(vec![NamedTensor::new("z", io("z"))]);
    let out = model
        .call(RStr::from("decode"), z.clone(), RStr::from("{}"))
        .into_result()
        .unwrap();
    assert_eq!(out[0].name.as_str(), "sample");
    let e = model
        .call(RStr::from("forward"), z.clone(), RStr::from(""))
        .into_result()
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message().contains("encode, decode"), "{e}");
    let e = model
        .call(RStr::from("decode"), z, RStr::from(r#"{"seed": 1}"#))
        .into_result()
        .unwrap_err();
    assert!(e.message().contains("unknown option 'seed'"), "{e}");
    let v: Value = serde_json::from_str(model.rbln_config_json().as_str()).unwrap();
    assert_eq!(v["batch_size"], 2);
    let e = class
        .from_pretrained(
            RStr::from(dir.to_str().unwrap()),
            Export::Yes,
            RStr::from("[1]"),
            RStr::from(""),
            support::backend().0,
            &NoProgress::boxed(),
        )
        .into_result()
        .err()
        .unwrap();
    assert!(
        e.message().contains("rbln_config must be a JSON object"),
        "{e}"
    );
}

#[test]
fn encoder_runtime_is_validated_at_load_and_created_on_first_encode() {
    let m = compile(&fixture(), Export::Yes, full()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("compiled");
    m.save_pretrained(&out).unwrap();
    let want = m.encode(&io("x")).unwrap();

    // The first encode of a loaded model creates the encoder's runtime from the file; the
    // result equals the model that compiled it, and later encodes reuse it.
    let loaded = compile(&out, Export::No, Value::Null).unwrap();
    let got = loaded.encode(&io("x")).unwrap();
    assert_eq!(got.mean, want.mean);
    assert_eq!(got.logvar, want.logvar);
    std::fs::remove_file(out.join("encoder.ref")).unwrap();
    assert_eq!(loaded.encode(&io("x")).unwrap().mean, want.mean);

    // A broken encoder is still refused when the model is loaded, not at the first encode.
    std::fs::write(out.join("encoder.ref"), b"garbage").unwrap();
    let e = compile(&out, Export::No, Value::Null).err().unwrap();
    assert!(
        e.message().contains("encoder.ref") && e.message().contains("encoder executable"),
        "{e}"
    );

    // An encoder file that changes between load and first encode is refused by name.
    m.save_pretrained(root.path().join("second")).unwrap();
    let second = root.path().join("second");
    let loaded = compile(&second, Export::No, Value::Null).unwrap();
    let mut bytes = std::fs::read(second.join("encoder.ref")).unwrap();
    bytes.push(b' ');
    std::fs::write(second.join("encoder.ref"), &bytes).unwrap();
    let e = loaded.encode(&io("x")).unwrap_err();
    assert!(
        e.message().contains("encode")
            && e.message().contains("encoder.ref")
            && e.message().contains("changed on disk"),
        "{e}"
    );
    // Decoding is unaffected.
    assert_eq!(
        loaded.decode(&io("z")).unwrap(),
        m.decode(&io("z")).unwrap()
    );
}
