//! `mlhost run`: runs encode or decode of a compiled model directory, or of a diffusers
//! directory compiled on the fly for the input's shape.

use super::backend::BackendArgs;
use crate::error::{path_str, plugin, require_dir, UsageError};
use crate::io::{self, Format};
use crate::models::describe::describe;
use crate::models::load::{open_dir, LoadSpec, Overrides};
use crate::models::resolve::class_for_dir;
use crate::models::Choice;
use crate::plugins::PluginRegistry;
use crate::progress::BarProgress;
use anyhow::Context;
use clap::{Args, ValueEnum};
use plugin_api::tensor::shape_str;
use plugin_api::{Export, ModelBox, NamedTensor, Tensor};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `mlhost run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// A compiled model directory, or a diffusers directory or Hugging Face Hub id (org/name)
    /// (compiled for the input's shape).
    pub model_dir: PathBuf,
    /// The method to run.
    #[arg(long, value_enum)]
    pub method: Method,
    /// Input: .safetensors (tensor `x` for encode, `z` for decode) or .png (encode only).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Output: .safetensors (every output tensor) or .png (decode only, batch 1).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Seed for sampling the latent distribution (encode also writes `sample`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Read this tensor of a .safetensors input instead of `x` / `z`; e.g. `--input-tensor mean`
    /// decodes what `encode` wrote.
    #[arg(long, value_name = "NAME")]
    pub input_tensor: Option<String>,
    /// Subfolder, Hub revision and weights variant.
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Model class, compiler and device.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// A model method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// Image `x` [B, C, H, W] -> latent distribution `mean`, `logvar` (and `sample` with --seed).
    Encode,
    /// Latent `z` [B, C, h, w] -> image `sample`.
    Decode,
}

impl Method {
    /// The method name plugins know.
    pub fn name(self) -> &'static str {
        match self {
            Method::Encode => "encode",
            Method::Decode => "decode",
        }
    }
    /// The input tensor read from a safetensors file.
    pub fn input_tensor(self) -> &'static str {
        match self {
            Method::Encode => "x",
            Method::Decode => "z",
        }
    }
}

/// The few facts of a model directory the command line needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Spatial factor between image and latent; None if unknown.
    pub vae_scale_factor: Option<usize>,
}

/// Asks the model class chosen for `dir` (see [`choose_class`]) for its image channels and
/// vae scale factor; the host does not read the model's files itself.
pub fn read_dir_config(
    registry: &PluginRegistry,
    backend: &BackendArgs,
    dir: &Path,
) -> anyhow::Result<DirConfig> {
    let class = choose_class(registry, backend, path_str(dir)?)?;
    let facts = describe(registry.model_class(&class)?, dir)?;
    Ok(DirConfig {
        in_channels: facts.in_channels,
        vae_scale_factor: Some(facts.vae_scale_factor),
    })
}

/// The `rbln_*` overrides that make an on-the-fly compile accept `input` for `method`.
pub fn kwargs_for_input(method: Method, shape: &[usize], config: &DirConfig) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("batch_size".into(), json!(shape[0]));
    match method {
        Method::Encode => {
            map.insert("sample_size".into(), json!([shape[2], shape[3]]));
            map.insert("uses_encoder".into(), json!(true));
        }
        Method::Decode => match config.vae_scale_factor {
            Some(vsf) => {
                map.insert(
                    "sample_size".into(),
                    json!([shape[2] * vsf, shape[3] * vsf]),
                );
            }
            None => tracing::warn!(
                "config.json has no block_out_channels; compiling with the plugin's default \
                 sample_size"
            ),
        },
    }
    map
}

/// Runs the method and writes the outputs.
pub fn run(registry: &PluginRegistry, args: &RunArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let method = args.method;
    let args = &RunArgs {
        model_dir: args.source.resolve(&args.model_dir)?,
        ..args.clone()
    };
    require_dir(&args.model_dir, "model directory")?;
    let in_format = io::format_of(&args.input)?;
    let out_format = io::format_of(&args.output)?;
    if method == Method::Decode && in_format == Format::Png {
        return Err(UsageError(format!(
            "decode takes latents: --input {} must be a .safetensors file with tensor `z`",
            args.input.display()
        ))
        .into());
    }
    if method == Method::Encode && out_format == Format::Png {
        return Err(UsageError(format!(
            "encode produces a latent distribution, not an image: --output {} must be a \
             .safetensors file",
            args.output.display()
        ))
        .into());
    }

    if let Some(parent) = args.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        require_dir(parent, "output directory")?;
    }

    let tensor_name = args
        .input_tensor
        .as_deref()
        .unwrap_or(method.input_tensor());
    // The input's own errors come first; only a PNG needs the model's channels to be read.
    let mut config = None;
    let input = match in_format {
        Format::SafeTensors => io::read_safetensors(&args.input, tensor_name)?,
        Format::Png => {
            let c = read_dir_config(registry, &args.backend, &args.model_dir)?;
            let png = io::read_png(&args.input, c.in_channels)?;
            config = Some(c);
            png
        }
    };
    let shape = input.shape();
    if shape.len() != 4 {
        return Err(UsageError(format!(
            "tensor `{}` in {} has shape {}; expected [B, C, H, W]",
            tensor_name,
            args.input.display(),
            shape_str(&shape)
        ))
        .into());
    }

    let config = match config {
        Some(c) => c,
        None => read_dir_config(registry, &args.backend, &args.model_dir)?,
    };
    let class_name = choose_class(registry, &args.backend, path_str(&args.model_dir)?)?;
    let class = registry.model_class(&class_name)?;
    let dir = path_str(&args.model_dir)?;
    let compiled = class.is_compiled_dir(dir.into());
    let mut kwargs = if compiled {
        tracing::info!("loading compiled {class_name} from {dir}");
        Map::new()
    } else {
        tracing::info!(
            "{dir} holds no compiled {class_name} (no matching rbln_config.json); compiling it \
             for input shape {}",
            shape_str(&shape)
        );
        kwargs_for_input(method, &shape, &config)
    };
    args.source.add_variant(&mut kwargs);

    let model = load_model(registry, &args.backend, &class_name, dir, kwargs)?;

    let options = match args.seed {
        Some(seed) => json!({ "seed": seed }),
        None => json!({}),
    };
    let inputs = vec![NamedTensor::new(method.input_tensor(), input)];
    let outputs = plugin(model.call(
        method.name().into(),
        inputs.into(),
        options.to_string().as_str().into(),
    ))
    .with_context(|| format!("running {} of {dir}", method.name()))?
    .into_vec();

    match out_format {
        Format::SafeTensors => io::write_safetensors(&args.output, &outputs)?,
        Format::Png => io::write_png(&args.output, image_output(&outputs, &args.output)?)?,
    }
    let written: Vec<String> = outputs
        .iter()
        .map(|t| format!("{} {}", t.name, shape_str(&t.tensor.shape())))
        .collect();
    eprintln!(
        "{}: wrote {} to {} in {:.2?}",
        method.name(),
        written.join(", "),
        args.output.display(),
        start.elapsed()
    );
    Ok(())
}

/// The class to use for `dir`: `--class`, else the one that recognizes `dir` as compiled, else
/// the only one loaded.
pub fn choose_class(
    registry: &PluginRegistry,
    backend: &BackendArgs,
    dir: &str,
) -> anyhow::Result<String> {
    class_for_dir(registry, backend.class.as_deref(), dir)
}

/// `from_pretrained(export=auto)` of `dir` as `class_name` with `kwargs` as the command line's
/// overrides, showing progress on stderr.
pub fn load_model(
    registry: &PluginRegistry,
    backend: &BackendArgs,
    class_name: &str,
    dir: &str,
    kwargs: Map<String, Value>,
) -> anyhow::Result<ModelBox> {
    let spec = LoadSpec {
        dir: Path::new(dir),
        export: Export::Auto,
        choice: Choice {
            class: Some(class_name.to_string()),
            ..backend.choice()
        },
        overrides: Overrides {
            rbln_config: Map::new(),
            kwargs,
        },
    };
    Ok(open_dir(registry, &spec, &BarProgress::stderr())?.1)
}

/// The decoded image among the outputs: `sample`, or the only output.
fn image_output<'a>(outputs: &'a [NamedTensor], path: &Path) -> anyhow::Result<&'a Tensor> {
    let found = outputs
        .iter()
        .find(|t| t.name.as_str() == "sample")
        .or(if outputs.len() == 1 {
            outputs.first()
        } else {
            None
        });
    found.map(|t| &t.tensor).ok_or_else(|| {
        let names: Vec<&str> = outputs.iter().map(|t| t.name.as_str()).collect();
        anyhow::anyhow!(
            "cannot write {}: the model returned no `sample` tensor (it returned: {})",
            path.display(),
            names.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kwargs_follow_the_input_shape() {
        let cfg = DirConfig {
            in_channels: 3,
            vae_scale_factor: Some(4),
        };
        let enc = kwargs_for_input(Method::Encode, &[2, 3, 32, 48], &cfg);
        assert_eq!(
            Value::Object(enc),
            json!({"batch_size": 2, "sample_size": [32, 48], "uses_encoder": true})
        );
        let dec = kwargs_for_input(Method::Decode, &[1, 4, 8, 6], &cfg);
        assert_eq!(
            Value::Object(dec),
            json!({"batch_size": 1, "sample_size": [32, 24]})
        );
    }
}
