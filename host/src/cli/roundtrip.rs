//! `mlhost roundtrip`: encodes a PNG, takes the mode (the mean) of the latent distribution,
//! decodes it, writes the reconstructed PNG and prints the PSNR against the input.
//!
//! The model directory is a compiled model with the encoder (`--uses-encoder`) or a diffusers
//! directory, compiled on the fly for the image's size with `uses_encoder = true`.

use super::backend::BackendArgs;
use super::run::{choose_class, kwargs_for_input, read_dir_config, Method};
use crate::error::{path_str, plugin, require_dir, UsageError};
use crate::io::{self, Format};
use crate::plugins::PluginRegistry;
use anyhow::Context;
use clap::Args;
use plugin_api::tensor::shape_str;
use plugin_api::{ModelBox, NamedTensor, Tensor};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `mlhost roundtrip`.
#[derive(Debug, Clone, Args)]
pub struct RoundtripArgs {
    /// A compiled model directory (with the encoder), or a diffusers directory or Hugging Face
    /// Hub id (org/name) (compiled for the image's size).
    pub model_dir: PathBuf,
    /// The image to reconstruct (.png, RGB or grayscale as the model takes).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Where to write the reconstructed image (.png).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Subfolder, Hub revision and weights variant.
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Model class, compiler and device.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Maps a model value in `[-1, 1]` to an 8-bit pixel exactly as the PNG writer does:
/// `round((clamp(v, -1, 1) + 1) * 127.5)`, rounding half away from zero.
pub fn to_u8(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// Peak signal-to-noise ratio in dB of two 8-bit images of the same size:
/// `10 * log10(255^2 / MSE)` over every pixel and channel; infinite when they are identical.
///
/// This is the formula of `tools/train_demo_vae/train.py`, so the figures compare directly.
pub fn psnr_u8(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "psnr_u8 compares images of one size");
    if a.is_empty() {
        return f64::INFINITY;
    }
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum();
    let mse = sum / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// Encodes, takes the mean, decodes, writes the image and prints the PSNR.
pub fn run(registry: &PluginRegistry, args: &RoundtripArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let args = &RoundtripArgs {
        model_dir: args.source.resolve(&args.model_dir)?,
        ..args.clone()
    };
    require_dir(&args.model_dir, "model directory")?;
    for (flag, path) in [("--input", &args.input), ("--output", &args.output)] {
        if io::format_of(path)? != Format::Png {
            return Err(UsageError(format!(
                "roundtrip reads and writes images: {flag} {} must be a .png file",
                path.display()
            ))
            .into());
        }
    }
    if let Some(parent) = args.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        require_dir(parent, "output directory")?;
    }

    let config = read_dir_config(registry, &args.backend, &args.model_dir)?;
    let image = io::read_png(&args.input, config.in_channels)?;
    let shape = image.shape();
    if let Some(vsf) = config.vae_scale_factor {
        if shape[2] % vsf != 0 || shape[3] % vsf != 0 {
            return Err(UsageError(format!(
                "{} is {}x{} pixels; this model needs a height and width divisible by its \
                 vae_scale_factor {vsf}",
                args.input.display(),
                shape[3],
                shape[2]
            ))
            .into());
        }
    }

    let model = load_model(registry, args, &shape)?;
    let dir = path_str(&args.model_dir)?;
    let encoded = call(&model, Method::Encode, "x", image.clone())
        .with_context(|| format!("running encode of {dir} on {}", args.input.display()))?;
    let mean = take(encoded, "mean", "encode")?;
    let latent_shape = mean.shape();
    let decoded = call(&model, Method::Decode, "z", mean)
        .with_context(|| format!("running decode of {dir}"))?;
    let sample = take(decoded, "sample", "decode")?;
    if sample.shape() != shape {
        return Err(anyhow::anyhow!(
            "decode returned an image of shape {} for an input of shape {}; cannot compare them",
            shape_str(&sample.shape()),
            shape_str(&shape)
        ));
    }
    io::write_png(&args.output, &sample)?;

    let original: Vec<u8> = image.data().iter().map(|&v| to_u8(v)).collect();
    let reconstructed: Vec<u8> = sample.data().iter().map(|&v| to_u8(v)).collect();
    let psnr = psnr_u8(&original, &reconstructed);
    println!(
        "PSNR {psnr:.2} dB  ({} -> encode -> mean {} -> decode, 8-bit, {} values)",
        args.input.display(),
        shape_str(&latent_shape),
        original.len()
    );
    println!("reconstructed image: {}", args.output.display());
    eprintln!("roundtrip: done in {:.2?}", start.elapsed());
    Ok(())
}

/// Loads the model: a compiled directory as it is, a diffusers directory compiled for `shape`
/// with the encoder.
fn load_model(
    registry: &PluginRegistry,
    args: &RoundtripArgs,
    shape: &[usize],
) -> anyhow::Result<ModelBox> {
    let dir = path_str(&args.model_dir)?;
    let class_name = choose_class(registry, &args.backend, dir)?;
    let class = registry.model_class(&class_name)?;
    let compiled = class.is_compiled_dir(dir.into());
    let mut kwargs = if compiled {
        check_compiled_has_encoder(&args.model_dir)?;
        tracing::info!("loading compiled {class_name} from {dir}");
        Map::new()
    } else {
        tracing::info!(
            "{dir} holds no compiled {class_name}; compiling it with the encoder for input \
             shape {}",
            shape_str(shape)
        );
        kwargs_for_input(
            Method::Encode,
            shape,
            &read_dir_config(registry, &args.backend, &args.model_dir)?,
        )
    };
    args.source.add_variant(&mut kwargs);
    super::run::load_model(registry, &args.backend, &class_name, dir, kwargs)
}

/// A compiled directory without the encoder cannot round-trip: say so before loading it.
fn check_compiled_has_encoder(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join("rbln_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("{} is not valid JSON: {e}", path.display())))?;
    if value.get("uses_encoder") == Some(&Value::Bool(false)) {
        return Err(UsageError(format!(
            "{} was compiled without the encoder (uses_encoder false in {}); recompile it with \
             `mlhost compile ... --uses-encoder`, or pass the diffusers directory",
            dir.display(),
            path.display()
        ))
        .into());
    }
    Ok(())
}

/// Calls `method` of the model with one input tensor.
fn call(
    model: &ModelBox,
    method: Method,
    input: &str,
    tensor: Tensor,
) -> anyhow::Result<Vec<NamedTensor>> {
    let inputs = vec![NamedTensor::new(input, tensor)];
    Ok(plugin(model.call(method.name().into(), inputs.into(), "{}".into()))?.into_vec())
}

/// The output tensor `name` of `method`, or an error listing what it returned.
fn take(outputs: Vec<NamedTensor>, name: &str, method: &str) -> anyhow::Result<Tensor> {
    let names: Vec<String> = outputs.iter().map(|t| t.name.to_string()).collect();
    outputs
        .into_iter()
        .find(|t| t.name.as_str() == name)
        .map(|t| t.tensor)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{method} returned no `{name}` tensor (it returned: {})",
                names.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_follows_the_formula() {
        assert_eq!(psnr_u8(&[1, 2, 3], &[1, 2, 3]), f64::INFINITY);
        // One value off by 255 out of 4: MSE = 255^2 / 4, PSNR = 10 log10(4).
        let p = psnr_u8(&[0, 0, 0, 0], &[255, 0, 0, 0]);
        assert!((p - 10.0 * 4f64.log10()).abs() < 1e-12, "{p}");
        // Every value off by 1: PSNR = 20 log10(255).
        let p = psnr_u8(&[10, 20], &[11, 19]);
        assert!((p - 20.0 * 255f64.log10()).abs() < 1e-12, "{p}");
    }

    #[test]
    fn to_u8_matches_the_png_writer() {
        assert_eq!(to_u8(-1.0), 0);
        assert_eq!(to_u8(1.0), 255);
        assert_eq!(to_u8(-3.0), 0);
        assert_eq!(to_u8(2.0), 255);
        assert_eq!(to_u8(0.0), 128); // 127.5 rounds half away from zero
        for v in 0..=255u8 {
            assert_eq!(
                to_u8(f32::from(v) / 127.5 - 1.0),
                v,
                "pixel {v} round-trips"
            );
        }
    }
}
