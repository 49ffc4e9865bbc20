//! A model ready to serve: loaded, its methods' signatures read, each method warmed up once.

use super::load::{open, open_manifest_model, LoadSpec, Overrides};
use super::signature::{self, MethodSig};
use super::{batch, Choice};
use crate::error::path_str;
use crate::manifest::{Manifest, ModelEntry, ServingOptions};
use crate::plugins::PluginRegistry;
use crate::progress::BarProgress;
use anyhow::{anyhow, Context};
use plugin_api::{Export, ModelBox};
use std::path::Path;
use std::sync::Arc;

/// A loaded, warmed-up model and how to serve it.
pub struct LoadedModel {
    /// The served name (methods become `<name>.<method>`).
    pub name: String,
    /// The model class.
    pub class: String,
    /// The plugin model.
    pub model: Arc<ModelBox>,
    /// Its methods.
    pub methods: Vec<MethodSig>,
    /// Queueing options.
    pub serving: ServingOptions,
}

/// Loads, compiles if asked and warms up one manifest model.
pub fn load_manifest_model(
    registry: &PluginRegistry,
    manifest: &Manifest,
    entry: &ModelEntry,
) -> anyhow::Result<LoadedModel> {
    let (class, model) = open_manifest_model(registry, manifest, entry, entry.export.export())?;
    finish(entry.name.clone(), class, model, entry.serving.clone())
}

/// Loads the compiled model in `dir` (a model repository entry) with default serving options.
pub fn load_repository_model(registry: &PluginRegistry, dir: &Path) -> anyhow::Result<LoadedModel> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{}: not a UTF-8 directory name", dir.display()))?
        .to_string();
    if let Some(problem) = crate::manifest::name_problem(&name) {
        return Err(anyhow!(
            "{}: the directory name cannot be a served model's name: {problem}",
            dir.display()
        ));
    }
    let dir_str = path_str(dir)?;
    let class = registry
        .model_classes
        .iter()
        .find(|(_, p)| p.item.is_compiled_dir(dir_str.into()))
        .map(|(n, _)| n.clone())
        .ok_or_else(|| {
            anyhow!(
                "{} is not a compiled model directory of any loaded class ({})",
                dir.display(),
                registry
                    .model_classes
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let spec = LoadSpec {
        dir,
        export: Export::No,
        choice: Choice {
            class: Some(class.clone()),
            ..Choice::default()
        },
        overrides: Overrides::default(),
    };
    let model = open(registry, &class, &spec, &BarProgress::hidden())
        .with_context(|| format!("loading {}", dir.display()))?;
    finish(name, class, model, ServingOptions::default())
}

/// Reads the methods' signatures and runs each once on zeros.
fn finish(
    name: String,
    class: String,
    model: ModelBox,
    serving: ServingOptions,
) -> anyhow::Result<LoadedModel> {
    let methods = signature::of_model(&model).map_err(|e| anyhow!("model \"{name}\": {e}"))?;
    for sig in &methods {
        batch::warm_up(&model, sig).with_context(|| format!("warming up {name}.{}", sig.method))?;
        tracing::info!("{name}.{}: warmed up (batch {})", sig.method, sig.batch);
    }
    Ok(LoadedModel {
        name,
        class,
        model: Arc::new(model),
        methods,
        serving,
    })
}
