//! diffusers' `config.json` for `AutoencoderKL`: the serde form with diffusers' defaults, and
//! the checked form the graph builder relies on.

use plugin_api::graph::Activation;
use plugin_api::PluginError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file name of the diffusers config inside a model directory.
pub const CONFIG_FILE: &str = "config.json";

/// `sample_size` as diffusers allows it: one int or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    /// Square images of this side.
    Square(u64),
    /// `[height, width]`.
    HeightWidth([u64; 2]),
}

impl SampleSize {
    /// `(height, width)`.
    pub fn hw(self) -> (u64, u64) {
        match self {
            SampleSize::Square(n) => (n, n),
            SampleSize::HeightWidth([h, w]) => (h, w),
        }
    }
}

/// `config.json` of a diffusers `AutoencoderKL`, every field with diffusers' default.
/// Underscore keys (`_class_name`, `_diffusers_version`, ...) and unknown keys are ignored, as
/// diffusers does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoencoderKLConfigFile {
    /// Image channels (default 3).
    pub in_channels: i64,
    /// Decoded image channels (default 3).
    pub out_channels: i64,
    /// Encoder block types; only `DownEncoderBlock2D`.
    pub down_block_types: Vec<String>,
    /// Decoder block types; only `UpDecoderBlock2D`.
    pub up_block_types: Vec<String>,
    /// Channels per block (default `[64]`).
    pub block_out_channels: Vec<i64>,
    /// Resnets per encoder block; decoder blocks have one more (default 1).
    pub layers_per_block: i64,
    /// Resnet activation: silu, swish, relu, gelu or mish (default silu).
    pub act_fn: String,
    /// Latent channels (default 4).
    pub latent_channels: i64,
    /// GroupNorm groups (default 32).
    pub norm_num_groups: i64,
    /// Default image size (default 32).
    pub sample_size: SampleSize,
    /// Latent scaling used by pipelines, not by the graphs (default 0.18215).
    pub scaling_factor: f64,
    /// Latent shift used by SD3/Flux pipelines (default null).
    pub shift_factor: Option<f64>,
    /// Per-channel latent mean (SDXL-style pipelines; default null).
    pub latents_mean: Option<Vec<f64>>,
    /// Per-channel latent std (default null).
    pub latents_std: Option<Vec<f64>>,
    /// Pipelines run the VAE in float32 when true (default true).
    pub force_upcast: bool,
    /// Whether `quant_conv` follows the encoder (default true).
    pub use_quant_conv: bool,
    /// Whether `post_quant_conv` precedes the decoder (default true).
    pub use_post_quant_conv: bool,
    /// Whether the mid blocks have attention (default true).
    pub mid_block_add_attention: bool,
}

impl Default for AutoencoderKLConfigFile {
    fn default() -> Self {
        AutoencoderKLConfigFile {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: SampleSize::Square(32),
            scaling_factor: 0.18215,
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

/// A validated `AutoencoderKL` config: every count positive, block lists consistent, groups
/// dividing every channel count.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoencoderKLConfig {
    /// Image channels (default 3).
    pub in_channels: usize,
    /// Decoded image channels (default 3).
    pub out_channels: usize,
    /// Channels per block (default `[64]`).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block; decoder blocks have one more (default 1).
    pub layers_per_block: usize,
    /// The resnets' non-linearity (`conv_act` before `conv_out` is always SiLU, as in diffusers).
    pub act_fn: Activation,
    /// Latent channels (default 4).
    pub latent_channels: usize,
    /// GroupNorm groups (default 32).
    pub norm_num_groups: usize,
    /// `(height, width)`.
    pub sample_size: (usize, usize),
    /// Latent scaling used by pipelines, not by the graphs (default 0.18215).
    pub scaling_factor: f64,
    /// Latent shift used by SD3/Flux pipelines (default null).
    pub shift_factor: Option<f64>,
    /// Per-channel latent mean (SDXL-style pipelines; default null).
    pub latents_mean: Option<Vec<f64>>,
    /// Per-channel latent std (default null).
    pub latents_std: Option<Vec<f64>>,
    /// Pipelines run the VAE in float32 when true (default true).
    pub force_upcast: bool,
    /// Whether `quant_conv` follows the encoder (default true).
    pub use_quant_conv: bool,
    /// Whether `post_quant_conv` precedes the decoder (default true).
    pub use_post_quant_conv: bool,
    /// Whether the mid blocks have attention (default true).
    pub mid_block_add_attention: bool,
    /// The file form it was checked from (written back by `save_pretrained`).
    pub file: AutoencoderKLConfigFile,
}

fn bad(field: &str, msg: impl std::fmt::Display) -> PluginError {
    PluginError::invalid(format!("{CONFIG_FILE}: {field}: {msg}"))
}

fn positive(field: &str, v: i64) -> Result<usize, PluginError> {
    if v > 0 {
        Ok(v as usize)
    } else {
        Err(bad(field, format!("must be a positive integer, got {v}")))
    }
}

/// Upper bounds on the architecture fields, checked before anything is sized from them (the
/// key list, the graphs): far above every diffusers VAE (SD: 4 blocks of at most 512 channels,
/// 2 layers per block), far below what would exhaust memory just describing the model.
pub const MAX_BLOCKS: usize = 8;
/// See [`MAX_BLOCKS`].
pub const MAX_LAYERS_PER_BLOCK: usize = 64;
/// See [`MAX_BLOCKS`] (every channel count: blocks, image, latent).
pub const MAX_CHANNELS: usize = 16384;

fn bounded(field: &str, v: i64, max: usize) -> Result<usize, PluginError> {
    let n = positive(field, v)?;
    if n > max {
        return Err(bad(
            field,
            format!("{n} exceeds the limit of {max} this plugin accepts"),
        ));
    }
    Ok(n)
}

/// Parses diffusers' `act_fn` name.
pub fn parse_activation(name: &str) -> Option<Activation> {
    match name {
        "silu" | "swish" => Some(Activation::Silu),
        "relu" => Some(Activation::Relu),
        "gelu" => Some(Activation::Gelu),
        "mish" => Some(Activation::Mish),
        _ => None,
    }
}

impl AutoencoderKLConfig {
    /// Reads and checks `dir/config.json`. A missing file is [`plugin_api::ErrorKind::NotFound`].
    pub fn from_dir(dir: &Path) -> Result<AutoencoderKLConfig, PluginError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                PluginError::not_found(format!("{} does not exist", path.display()))
            } else {
                PluginError::invalid(format!("cannot read {}: {e}", path.display()))
            }
        })?;
        Self::from_json_str(&text).map_err(|e| e.context(path.display()))
    }

    /// Parses and checks the text of a `config.json`.
    pub fn from_json_str(text: &str) -> Result<AutoencoderKLConfig, PluginError> {
        let file: AutoencoderKLConfigFile = serde_json::from_str(text)
            .map_err(|e| PluginError::invalid(format!("{CONFIG_FILE} is not valid: {e}")))?;
        Self::check(file)
    }

    /// Checks a parsed config.
    pub fn check(file: AutoencoderKLConfigFile) -> Result<AutoencoderKLConfig, PluginError> {
        let n = file.block_out_channels.len();
        if n == 0 {
            return Err(bad("block_out_channels", "must not be empty"));
        }
        if n > MAX_BLOCKS {
            return Err(bad(
                "block_out_channels",
                format!("{n} blocks exceed the limit of {MAX_BLOCKS} this plugin accepts"),
            ));
        }
        let boc = file
            .block_out_channels
            .iter()
            .enumerate()
            .map(|(i, &c)| bounded(&format!("block_out_channels[{i}]"), c, MAX_CHANNELS))
            .collect::<Result<Vec<_>, _>>()?;
        for (field, types, want) in [
            (
                "down_block_types",
                &file.down_block_types,
                "DownEncoderBlock2D",
            ),
            ("up_block_types", &file.up_block_types, "UpDecoderBlock2D"),
        ] {
            if types.len() != n {
                return Err(bad(
                    field,
                    format!(
                        "has {} entries but block_out_channels has {n}; they must match",
                        types.len()
                    ),
                ));
            }
            if let Some((i, t)) = types.iter().enumerate().find(|(_, t)| *t != want) {
                return Err(PluginError::unsupported(format!(
                    "{CONFIG_FILE}: {field}[{i}]: block type '{t}' is not supported (only {want})"
                )));
            }
        }
        let act_fn = parse_activation(&file.act_fn).ok_or_else(|| {
            PluginError::unsupported(format!(
                "{CONFIG_FILE}: act_fn: '{}' is not supported (silu, swish, relu, gelu, mish)",
                file.act_fn
            ))
        })?;
        let in_channels = bounded("in_channels", file.in_channels, MAX_CHANNELS)?;
        let out_channels = bounded("out_channels", file.out_channels, MAX_CHANNELS)?;
        let latent_channels = bounded("latent_channels", file.latent_channels, MAX_CHANNELS)?;
        let layers_per_block = bounded(
            "layers_per_block",
            file.layers_per_block,
            MAX_LAYERS_PER_BLOCK,
        )?;
        let groups = positive("norm_num_groups", file.norm_num_groups)?;
        for (i, &c) in boc.iter().enumerate() {
            if c % groups != 0 {
                return Err(bad(
                    "norm_num_groups",
                    format!("norm_num_groups ({groups}) must divide block_out_channels[{i}] ({c})"),
                ));
            }
        }
        let (h, w) = file.sample_size.hw();
        if h == 0 || w == 0 {
            return Err(bad(
                "sample_size",
                format!("must be positive, got {:?}", (h, w)),
            ));
        }
        if !file.scaling_factor.is_finite() || file.scaling_factor == 0.0 {
            return Err(bad(
                "scaling_factor",
                format!("must be finite and non-zero, got {}", file.scaling_factor),
            ));
        }
        for (field, list) in [
            ("latents_mean", &file.latents_mean),
            ("latents_std", &file.latents_std),
        ] {
            if let Some(l) = list {
                if l.len() != latent_channels {
                    return Err(bad(
                        field,
                        format!(
                            "has {} entries but latent_channels is {latent_channels}",
                            l.len()
                        ),
                    ));
                }
            }
        }
        Ok(AutoencoderKLConfig {
            in_channels,
            out_channels,
            block_out_channels: boc,
            layers_per_block,
            act_fn,
            latent_channels,
            norm_num_groups: groups,
            sample_size: (h as usize, w as usize),
            scaling_factor: file.scaling_factor,
            shift_factor: file.shift_factor,
            latents_mean: file.latents_mean.clone(),
            latents_std: file.latents_std.clone(),
            force_upcast: file.force_upcast,
            use_quant_conv: file.use_quant_conv,
            use_post_quant_conv: file.use_post_quant_conv,
            mid_block_add_attention: file.mid_block_add_attention,
            file,
        })
    }

    /// The spatial factor between image and latent: `2^(len(block_out_channels) - 1)`.
    pub fn vae_scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// The config as diffusers writes it (with `_class_name`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::Map::new();
        v.insert("_class_name".into(), "AutoencoderKL".into());
        if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&self.file) {
            v.extend(m);
        }
        serde_json::Value::Object(v)
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
