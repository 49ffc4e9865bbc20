//! The checkpoint: reading `diffusion_pytorch_model.safetensors`, the key -> shape map a config
//! implies (keys exactly as diffusers names them), legacy attention key conversion and checking.

use crate::config::AutoencoderKLConfig;
use plugin_api::tensor::safetensors_header::check_header;
use plugin_api::tensor::shape_str;
use plugin_api::PluginError;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The weights file name inside a diffusers model directory.
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

/// The weights file of a variant, as diffusers names it: `diffusion_pytorch_model.<variant>.
/// safetensors` (`None`: [`WEIGHTS_FILE`]). A variant is letters, digits, `-` and `_`.
pub fn weights_file(variant: Option<&str>) -> Result<String, PluginError> {
    match variant {
        None => Ok(WEIGHTS_FILE.to_string()),
        Some(v)
            if !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')) =>
        {
            Ok(format!("diffusion_pytorch_model.{v}.safetensors"))
        }
        Some(v) => Err(PluginError::invalid(format!(
            "variant \"{v}\" must be letters, digits, '-' and '_' (e.g. fp16)"
        ))),
    }
}

/// One weight tensor, upcast to `f32`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Weight {
    /// Shape as in PyTorch.
    pub shape: Vec<usize>,
    /// Elements.
    pub data: Vec<f32>,
}

impl Weight {
    /// Creates a weight, checking the element count.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Weight, PluginError> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(PluginError::invalid(format!(
                "weight of shape {} needs {n} elements, got {}",
                shape_str(&shape),
                data.len()
            )));
        }
        Ok(Weight { shape, data })
    }
}

/// A checked set of weights: exactly the keys and shapes the config implies.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    map: HashMap<String, Weight>,
}

impl Weights {
    /// The weight stored under a checkpoint key.
    pub fn get(&self, key: &str) -> Result<&Weight, PluginError> {
        self.map
            .get(key)
            .ok_or_else(|| PluginError::internal(format!("weight '{key}' was not loaded")))
    }
    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Iterates over `(key, weight)` in unspecified order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Weight)> {
        self.map.iter()
    }

    /// Converts legacy attention keys, then checks `raw` against the keys and shapes `config`
    /// implies: a missing key, a wrong shape and any extra key are errors naming them.
    ///
    /// `source` names where the weights came from (a file name) for the messages.
    pub fn check(
        config: &AutoencoderKLConfig,
        mut raw: HashMap<String, Weight>,
        source: &str,
    ) -> Result<Weights, PluginError> {
        convert_legacy_attention(&mut raw);
        let expected = expected_shapes(config);
        let missing: Vec<(&String, &Vec<usize>)> = expected
            .iter()
            .filter(|(k, _)| !raw.contains_key(*k))
            .collect();
        if let Some((key, shape)) = missing.first() {
            let more = match missing.len() {
                1 => String::new(),
                n => format!(" and {} more missing tensor(s)", n - 1),
            };
            return Err(PluginError::invalid(format!(
                "{source}: missing tensor '{key}' (expected shape {}){more}",
                shape_str(shape)
            )));
        }
        for (key, shape) in &expected {
            let w = &raw[key];
            if w.shape != *shape {
                return Err(PluginError::invalid(format!(
                    "{source}: tensor '{key}' has shape {} in the file but the config implies {}",
                    shape_str(&w.shape),
                    shape_str(shape)
                )));
            }
        }
        let mut extra: Vec<&String> = raw.keys().filter(|k| !expected.contains_key(*k)).collect();
        if !extra.is_empty() {
            extra.sort();
            let list: Vec<&str> = extra.iter().take(20).map(|s| s.as_str()).collect();
            let more = if extra.len() > 20 {
                format!(" and {} more", extra.len() - 20)
            } else {
                String::new()
            };
            return Err(PluginError::invalid(format!(
                "{source}: {} unexpected tensor(s) not used by the model described by \
                 config.json (config and weights do not match, e.g. layers_per_block or \
                 block_out_channels): {}{more}",
                extra.len(),
                list.join(", ")
            )));
        }
        Ok(Weights { map: raw })
    }
}

/// Renames `query`/`key`/`value`/`proj_attn` of the mid-block attentions to
/// `to_q`/`to_k`/`to_v`/`to_out.0` (as diffusers does on load), squeezing 1x1-conv weights
/// `[C, C, 1, 1]` to linear `[C, C]`. A legacy key whose new name is already present is left in
/// place (and reported as unexpected).
pub fn convert_legacy_attention(raw: &mut HashMap<String, Weight>) {
    const RENAMES: [(&str, &str); 4] = [
        ("query", "to_q"),
        ("key", "to_k"),
        ("value", "to_v"),
        ("proj_attn", "to_out.0"),
    ];
    for part in ["encoder", "decoder"] {
        let path = format!("{part}.mid_block.attentions.0");
        for (old, new) in RENAMES {
            for p in ["weight", "bias"] {
                let (old_key, new_key) = (format!("{path}.{old}.{p}"), format!("{path}.{new}.{p}"));
                if raw.contains_key(&new_key) {
                    continue;
                }
                if let Some(mut w) = raw.remove(&old_key) {
                    if w.shape.len() == 4 && w.shape[2] == 1 && w.shape[3] == 1 {
                        w.shape.truncate(2);
                    }
                    raw.insert(new_key, w);
                }
            }
        }
    }
}

/// Reads every tensor of a safetensors file, upcasting F16 and BF16 to F32.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Weight>, PluginError> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            PluginError::not_found(format!("{} does not exist", path.display()))
        } else {
            PluginError::invalid(format!("cannot read {}: {e}", path.display()))
        }
    })?;
    parse_safetensors(&bytes).map_err(|e| e.context(path.display()))
}

/// Decodes a safetensors buffer (see [`read_safetensors`]). The header is checked first
/// ([`check_header`]), so that a problem names the tensor it concerns.
pub fn parse_safetensors(bytes: &[u8]) -> Result<HashMap<String, Weight>, PluginError> {
    let invalid = |e: &dyn std::fmt::Display| {
        PluginError::invalid(format!(
            "not a valid safetensors file (corrupt or truncated): {e}"
        ))
    };
    check_header(bytes).map_err(|e| invalid(&e))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| invalid(&e))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(PluginError::unsupported(format!(
                    "tensor '{name}' has dtype {other:?}; only F32, F16 and BF16 are supported"
                )))
            }
        };
        let w = Weight::new(view.shape().to_vec(), data)
            .map_err(|e| e.context(format!("tensor '{name}'")))?;
        out.insert(name, w);
    }
    Ok(out)
}

fn conv(m: &mut BTreeMap<String, Vec<usize>>, key: &str, cout: usize, cin: usize, k: usize) {
    m.insert(format!("{key}.weight"), vec![cout, cin, k, k]);
    m.insert(format!("{key}.bias"), vec![cout]);
}

fn vector(m: &mut BTreeMap<String, Vec<usize>>, key: &str, c: usize) {
    m.insert(format!("{key}.weight"), vec![c]);
    m.insert(format!("{key}.bias"), vec![c]);
}

fn resnet(m: &mut BTreeMap<String, Vec<usize>>, key: &str, cin: usize, cout: usize) {
    vector(m, &format!("{key}.norm1"), cin);
    conv(m, &format!("{key}.conv1"), cout, cin, 3);
    vector(m, &format!("{key}.norm2"), cout);
    conv(m, &format!("{key}.conv2"), cout, cout, 3);
    if cin != cout {
        conv(m, &format!("{key}.conv_shortcut"), cout, cin, 1);
    }
}

fn mid_block(m: &mut BTreeMap<String, Vec<usize>>, key: &str, c: usize, attention: bool) {
    resnet(m, &format!("{key}.resnets.0"), c, c);
    if attention {
        let a = format!("{key}.attentions.0");
        vector(m, &format!("{a}.group_norm"), c);
        for lin in ["to_q", "to_k", "to_v", "to_out.0"] {
            m.insert(format!("{a}.{lin}.weight"), vec![c, c]);
            m.insert(format!("{a}.{lin}.bias"), vec![c]);
        }
    }
    resnet(m, &format!("{key}.resnets.1"), c, c);
}

/// Every checkpoint key of the diffusers `AutoencoderKL` described by `c`, with its shape.
pub fn expected_shapes(c: &AutoencoderKLConfig) -> BTreeMap<String, Vec<usize>> {
    let mut m = BTreeMap::new();
    let boc = &c.block_out_channels;
    let (n, last, lat) = (boc.len(), boc[boc.len() - 1], c.latent_channels);

    conv(&mut m, "encoder.conv_in", boc[0], c.in_channels, 3);
    let mut cin = boc[0];
    for (i, &cout) in boc.iter().enumerate() {
        for j in 0..c.layers_per_block {
            let from = if j == 0 { cin } else { cout };
            resnet(
                &mut m,
                &format!("encoder.down_blocks.{i}.resnets.{j}"),
                from,
                cout,
            );
        }
        if i + 1 < n {
            let key = format!("encoder.down_blocks.{i}.downsamplers.0.conv");
            conv(&mut m, &key, cout, cout, 3);
        }
        cin = cout;
    }
    mid_block(&mut m, "encoder.mid_block", last, c.mid_block_add_attention);
    vector(&mut m, "encoder.conv_norm_out", last);
    conv(&mut m, "encoder.conv_out", 2 * lat, last, 3);
    if c.use_quant_conv {
        conv(&mut m, "quant_conv", 2 * lat, 2 * lat, 1);
    }

    if c.use_post_quant_conv {
        conv(&mut m, "post_quant_conv", lat, lat, 1);
    }
    conv(&mut m, "decoder.conv_in", last, lat, 3);
    mid_block(&mut m, "decoder.mid_block", last, c.mid_block_add_attention);
    let mut cin = last;
    for (i, &cout) in boc.iter().rev().enumerate() {
        for j in 0..=c.layers_per_block {
            let from = if j == 0 { cin } else { cout };
            resnet(
                &mut m,
                &format!("decoder.up_blocks.{i}.resnets.{j}"),
                from,
                cout,
            );
        }
        if i + 1 < n {
            let key = format!("decoder.up_blocks.{i}.upsamplers.0.conv");
            conv(&mut m, &key, cout, cout, 3);
        }
        cin = cout;
    }
    vector(&mut m, "decoder.conv_norm_out", boc[0]);
    conv(&mut m, "decoder.conv_out", c.out_channels, boc[0], 3);
    m
}

#[cfg(test)]
#[path = "weights_tests.rs"]
mod tests;
