use super::*;
use crate::testing::{random_weights, safetensors_bytes, tiny_config};
use plugin_api::ErrorKind;

fn check(c: &AutoencoderKLConfig, w: HashMap<String, Weight>) -> Result<Weights, PluginError> {
    Weights::check(c, w, WEIGHTS_FILE)
}

#[test]
fn expected_map_of_tiny_config() {
    // blocks [8, 16], layers_per_block 1, latent 2, in 3, out 3.
    let c = tiny_config("{}");
    let m = expected_shapes(&c);
    let s = |k: &str| m.get(k).cloned().unwrap_or_else(|| panic!("missing {k}"));
    assert_eq!(s("encoder.conv_in.weight"), vec![8, 3, 3, 3]);
    assert_eq!(s("encoder.down_blocks.0.resnets.0.norm1.weight"), vec![8]);
    assert_eq!(
        s("encoder.down_blocks.0.downsamplers.0.conv.weight"),
        vec![8, 8, 3, 3]
    );
    assert_eq!(
        s("encoder.down_blocks.1.resnets.0.conv1.weight"),
        vec![16, 8, 3, 3]
    );
    assert_eq!(
        s("encoder.down_blocks.1.resnets.0.conv_shortcut.weight"),
        vec![16, 8, 1, 1]
    );
    assert!(!m.contains_key("encoder.down_blocks.0.resnets.0.conv_shortcut.weight"));
    assert!(!m.contains_key("encoder.down_blocks.1.downsamplers.0.conv.weight"));
    assert_eq!(
        s("encoder.mid_block.attentions.0.group_norm.bias"),
        vec![16]
    );
    assert_eq!(
        s("encoder.mid_block.attentions.0.to_q.weight"),
        vec![16, 16]
    );
    assert_eq!(s("encoder.mid_block.attentions.0.to_out.0.bias"), vec![16]);
    assert_eq!(s("encoder.conv_out.weight"), vec![4, 16, 3, 3]);
    assert_eq!(s("quant_conv.weight"), vec![4, 4, 1, 1]);
    assert_eq!(s("post_quant_conv.weight"), vec![2, 2, 1, 1]);
    assert_eq!(s("decoder.conv_in.weight"), vec![16, 2, 3, 3]);
    // Decoder up blocks run over reversed channels with layers_per_block + 1 resnets.
    assert_eq!(
        s("decoder.up_blocks.0.resnets.1.conv2.weight"),
        vec![16, 16, 3, 3]
    );
    assert_eq!(
        s("decoder.up_blocks.0.upsamplers.0.conv.weight"),
        vec![16, 16, 3, 3]
    );
    assert_eq!(
        s("decoder.up_blocks.1.resnets.0.conv1.weight"),
        vec![8, 16, 3, 3]
    );
    assert_eq!(
        s("decoder.up_blocks.1.resnets.0.conv_shortcut.weight"),
        vec![8, 16, 1, 1]
    );
    assert!(!m.contains_key("decoder.up_blocks.1.upsamplers.0.conv.weight"));
    assert!(!m.contains_key("decoder.up_blocks.0.resnets.2.norm1.weight"));
    assert_eq!(s("decoder.conv_out.weight"), vec![3, 8, 3, 3]);
    // A resnet has 8 tensors (10 with a shortcut), an attention 10, a conv or norm 2.
    let encoder = 2 + (8 + 2) + 10 + (8 + 10 + 8) + 2 + 2 + 2;
    let decoder = 2 + (8 + 10 + 8) + (8 + 8) + 2 + (10 + 8) + 2 + 2 + 2;
    assert_eq!(m.len(), encoder + decoder);
}

#[test]
fn optional_parts_follow_config() {
    let c = tiny_config(
        r#"{"use_quant_conv": false, "use_post_quant_conv": false, "mid_block_add_attention": false}"#,
    );
    let m = expected_shapes(&c);
    assert!(!m.contains_key("quant_conv.weight"));
    assert!(!m.contains_key("post_quant_conv.bias"));
    assert!(!m.keys().any(|k| k.contains("attentions")));
    assert!(m.contains_key("decoder.mid_block.resnets.1.conv2.bias"));
}

#[test]
fn missing_wrong_shape_and_extra_keys() {
    let c = tiny_config("{}");
    let full = random_weights(&c, 1);
    assert_eq!(
        check(&c, full.clone()).unwrap().len(),
        expected_shapes(&c).len()
    );

    let mut w = full.clone();
    w.remove("encoder.mid_block.attentions.0.to_k.weight");
    let e = check(&c, w).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(
        e.message()
            .contains("encoder.mid_block.attentions.0.to_k.weight"),
        "{e}"
    );
    assert!(e.message().contains("[16, 16]"), "{e}");

    let mut w = full.clone();
    w.insert(
        "decoder.conv_in.weight".into(),
        Weight::new(vec![16, 2, 1, 1], vec![0.0; 32]).unwrap(),
    );
    let e = check(&c, w).unwrap_err();
    assert!(e.message().contains("decoder.conv_in.weight"), "{e}");
    assert!(
        e.message().contains("[16, 2, 1, 1]") && e.message().contains("[16, 2, 3, 3]"),
        "{e}"
    );

    // Weights of a model with layers_per_block = 2 against a config saying 1.
    let bigger = random_weights(&tiny_config(r#"{"layers_per_block": 2}"#), 1);
    let e = check(&c, bigger).unwrap_err();
    assert!(e.message().contains("unexpected"), "{e}");
    assert!(
        e.message()
            .contains("encoder.down_blocks.0.resnets.1.conv1.bias"),
        "{e}"
    );
    assert!(e.message().contains("layers_per_block"), "{e}");
}

#[test]
fn legacy_attention_keys_are_converted() {
    let c = tiny_config("{}");
    let mut w = random_weights(&c, 2);
    let p = "decoder.mid_block.attentions.0";
    for (old, new) in [
        ("query", "to_q"),
        ("key", "to_k"),
        ("value", "to_v"),
        ("proj_attn", "to_out.0"),
    ] {
        let mut wt = w.remove(&format!("{p}.{new}.weight")).unwrap();
        if old == "proj_attn" {
            wt.shape = vec![16, 16, 1, 1]; // stored as a 1x1 conv
        }
        w.insert(format!("{p}.{old}.weight"), wt);
        let b = w.remove(&format!("{p}.{new}.bias")).unwrap();
        w.insert(format!("{p}.{old}.bias"), b);
    }
    let want = random_weights(&c, 2);
    let got = check(&c, w).unwrap();
    assert_eq!(
        got.get(&format!("{p}.to_out.0.weight")).unwrap(),
        &want[&format!("{p}.to_out.0.weight")]
    );
    assert_eq!(
        got.get(&format!("{p}.to_q.bias")).unwrap(),
        &want[&format!("{p}.to_q.bias")]
    );
}

#[test]
fn safetensors_dtypes_upcast() {
    let mut w = HashMap::new();
    w.insert(
        "a".to_string(),
        Weight::new(vec![2, 2], vec![1.0, -2.5, 0.333_333_3, 65504.0]).unwrap(),
    );
    let f32s = parse_safetensors(&safetensors_bytes(&w, Dtype::F32).unwrap()).unwrap();
    assert_eq!(f32s["a"], w["a"]);
    let f16s = parse_safetensors(&safetensors_bytes(&w, Dtype::F16).unwrap()).unwrap();
    assert_eq!(f16s["a"].shape, vec![2, 2]);
    // 1/3 in f16 is 0.33325195.
    assert_eq!(f16s["a"].data, vec![1.0, -2.5, 0.333_251_95, 65504.0]);
    let bf16s = parse_safetensors(&safetensors_bytes(&w, Dtype::BF16).unwrap()).unwrap();
    // 1/3 in bf16 is 0.33398438; 65504 rounds to 65536.
    assert_eq!(bf16s["a"].data, vec![1.0, -2.5, 0.333_984_38, 65536.0]);
}

#[test]
fn unsupported_dtype_names_tensor() {
    let data = [0u8; 8];
    let v = safetensors::tensor::TensorView::new(Dtype::I64, vec![1], &data).unwrap();
    let bytes = safetensors::tensor::serialize([("step", v)], &None).unwrap();
    let e = parse_safetensors(&bytes).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(
        e.message().contains("'step'") && e.message().contains("I64"),
        "{e}"
    );
}

#[test]
fn truncated_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let c = tiny_config("{}");
    let bytes = safetensors_bytes(&random_weights(&c, 3), Dtype::F32).unwrap();
    let path = dir.path().join(WEIGHTS_FILE);
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = read_safetensors(&path).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message().contains(WEIGHTS_FILE), "{e}");
    std::fs::write(&path, b"garbage").unwrap();
    let e = read_safetensors(&path).unwrap_err();
    assert!(e.message().contains(WEIGHTS_FILE), "{e}");
    let e = read_safetensors(&dir.path().join("nope.safetensors")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
}
