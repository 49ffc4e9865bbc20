//! Loading one method of a model through mlhost's model layer, and running it on a full batch.

use crate::config::Params;
use anyhow::{anyhow, Context};
use mlhost::error::KindError;
use mlhost::models::load::{open_dir, LoadSpec, Overrides};
use mlhost::models::resolve::ModelSource;
use mlhost::models::{run_batch, signature, warm_up, Choice, MethodSig};
use mlhost::progress::BarProgress;
use mlhost::PluginRegistry;
use plugin_api::{Export, ModelBox};
use serde_json::Map;
use std::path::Path;

/// A loaded model and the signature of the method served from it.
pub struct LoadedMethod {
    /// The plugin model.
    pub model: ModelBox,
    /// The served method: input, outputs, compiled batch.
    pub sig: MethodSig,
}

/// Loads `dir` as `mlhost run` does (a compiled directory, or a diffusers directory compiled with
/// `params.rbln_config`), picks `params.method` and runs it once on zeros.
pub fn load(
    registry: &PluginRegistry,
    dir: &Path,
    params: &Params,
) -> anyhow::Result<LoadedMethod> {
    if !dir.is_dir() {
        return Err(anyhow!(
            "model directory {} does not exist (set parameter \"model_dir\", relative to the \
             model's directory, or put the model in the version directory)",
            dir.display()
        ));
    }
    let spec = LoadSpec {
        dir,
        export: Export::Auto,
        choice: Choice {
            class: params.class.clone(),
            compiler: params.compiler.clone(),
            device: params.device.clone(),
        },
        overrides: Overrides {
            rbln_config: params.rbln_config.clone(),
            kwargs: {
                let mut kwargs = Map::new();
                source(params, "").add_variant(&mut kwargs);
                kwargs
            },
        },
    };
    // Triton owns the log: no progress bar on its stderr.
    let (class, model) = open_dir(registry, &spec, &BarProgress::hidden())?;
    let sig = signature::of_method(&model, &params.method)
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("{class} loaded from {}", dir.display()))?;
    warm_up(&model, &sig)
        .map_err(|e| anyhow!("warming up {} of {}: {e}", params.method, dir.display()))?;
    Ok(LoadedMethod { model, sig })
}

/// Where `params` say the model is: `model_dir` (default `default_dir`, the version directory)
/// with `subfolder`, `revision` and `variant`.
pub fn source(params: &Params, default_dir: &str) -> ModelSource {
    ModelSource {
        id: params
            .model_dir
            .clone()
            .unwrap_or_else(|| default_dir.to_string()),
        subfolder: params.subfolder.clone(),
        revision: params.revision.clone(),
        variant: params.variant.clone(),
    }
}

/// The local directory `params` name, relative to the model's directory `model_root`: a Hub id
/// is resolved in the Hugging Face cache, downloading what is missing (Triton owns the log: no
/// progress bar).
pub fn resolve_dir(
    model_root: &Path,
    version: u64,
    params: &Params,
) -> anyhow::Result<std::path::PathBuf> {
    let version_dir = model_root.join(version.to_string());
    if params.model_dir.is_none() && !version_dir.exists() {
        // `load` says what to do: the version directory is not a Hub id.
        return Ok(version_dir);
    }
    source(params, &version.to_string()).resolve(model_root, &BarProgress::hidden())
}

impl LoadedMethod {
    /// Values per item of the input.
    pub fn input_row(&self) -> usize {
        self.sig.input_row()
    }

    /// Runs the method on one full batch (`batch * input_row` values); outputs in signature
    /// order, each `batch` rows.
    pub fn run(&self, input: Vec<f32>) -> Result<Vec<Vec<f32>>, KindError> {
        run_batch(&self.model, &self.sig, input)
    }
}
