//! Helpers for tests (here and in the workspace's integration tests): deterministic random
//! weights for a config and writing a diffusers-style checkpoint directory.

use crate::config::{AutoencoderKLConfig, CONFIG_FILE};
use crate::weights::{expected_shapes, Weight, WEIGHTS_FILE};
use plugin_api::PluginError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::Path;

/// Random weights with every key and shape `config` implies. Convolution and linear weights
/// are uniform in `±1/sqrt(fan_in)` (PyTorch's default init range), norm scales near 1 and
/// biases small, so activations stay in a sane range through the whole network.
pub fn random_weights(config: &AutoencoderKLConfig, seed: u64) -> HashMap<String, Weight> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = HashMap::new();
    for (key, shape) in expected_shapes(config) {
        let n: usize = shape.iter().product();
        let is_norm = key.contains("norm");
        let data: Vec<f32> = if shape.len() >= 2 {
            let fan_in: usize = shape[1..].iter().product();
            let bound = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| rng.gen_range(-bound..bound)).collect()
        } else if is_norm && key.ends_with(".weight") {
            (0..n).map(|_| rng.gen_range(0.8..1.2)).collect()
        } else {
            (0..n).map(|_| rng.gen_range(-0.1..0.1)).collect()
        };
        out.insert(key, Weight { shape, data });
    }
    out
}

/// Serializes weights to safetensors bytes in `dtype` (F32, F16 or BF16).
pub fn safetensors_bytes(
    weights: &HashMap<String, Weight>,
    dtype: Dtype,
) -> Result<Vec<u8>, PluginError> {
    let mut encoded: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(weights.len());
    for (k, w) in weights {
        let bytes: Vec<u8> = match dtype {
            Dtype::F32 => w.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => w
                .data
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            Dtype::BF16 => w
                .data
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            other => {
                return Err(PluginError::unsupported(format!(
                    "cannot write dtype {other:?}"
                )))
            }
        };
        encoded.push((k.clone(), w.shape.clone(), bytes));
    }
    let views = encoded
        .iter()
        .map(|(k, s, b)| {
            TensorView::new(dtype, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| PluginError::internal(format!("tensor '{k}': {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::tensor::serialize(views, &None)
        .map_err(|e| PluginError::internal(format!("serializing safetensors: {e}")))
}

/// Writes `dir/config.json` (the given JSON) and `dir/diffusion_pytorch_model.safetensors`.
pub fn write_checkpoint(
    dir: &Path,
    config_json: &serde_json::Value,
    weights: &HashMap<String, Weight>,
    dtype: Dtype,
) -> Result<(), PluginError> {
    let io = |e: std::io::Error| PluginError::internal(format!("writing {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let text = serde_json::to_string_pretty(config_json)
        .map_err(|e| PluginError::internal(e.to_string()))?;
    std::fs::write(dir.join(CONFIG_FILE), text).map_err(io)?;
    std::fs::write(dir.join(WEIGHTS_FILE), safetensors_bytes(weights, dtype)?).map_err(io)?;
    Ok(())
}

/// A small config for tests: two blocks of 8 and 16 channels, 4 groups, 2 latent channels,
/// sample size 16, with `overrides` (a JSON object) applied on top.
pub fn tiny_config_json(overrides: &str) -> serde_json::Value {
    let mut base = serde_json::json!({
        "_class_name": "AutoencoderKL",
        "in_channels": 3, "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
        "block_out_channels": [8, 16], "layers_per_block": 1, "latent_channels": 2,
        "norm_num_groups": 4, "sample_size": 16
    });
    let extra: serde_json::Value = serde_json::from_str(overrides).expect("overrides are JSON");
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

/// [`tiny_config_json`], checked.
pub fn tiny_config(overrides: &str) -> AutoencoderKLConfig {
    AutoencoderKLConfig::from_json_str(&tiny_config_json(overrides).to_string())
        .expect("tiny config is valid")
}

/// The SD v1 VAE architecture (`block_out_channels` [128, 256, 512, 512], 2 layers per block,
/// 32 groups, 4 latent channels) at `sample_size`, as `config.json` holds it: with
/// [`random_weights`], an SD-size model made without Python.
pub fn sd_config_json(sample_size: usize) -> serde_json::Value {
    let down = ["DownEncoderBlock2D"; 4];
    let up = ["UpDecoderBlock2D"; 4];
    tiny_config_json(
        &serde_json::json!({
            "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
            "latent_channels": 4, "norm_num_groups": 32, "sample_size": sample_size,
            "down_block_types": down, "up_block_types": up,
        })
        .to_string(),
    )
}

/// A deterministic input in [-1, 1] of `shape` (a multiplicative hash of the index and `seed`).
pub fn seeded_input(shape: &[usize], seed: u32) -> plugin_api::Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    plugin_api::Tensor::new(shape.to_vec(), data).expect("the length is the shape's product")
}
