//! The models a pipeline's steps call, loaded from its manifest and callable by the pipeline
//! executor.

use super::load::open_manifest_model;
use crate::error::{kind_of, plugin};
use crate::manifest::Manifest;
use crate::pipeline::exec::{CallError, Models};
use crate::pipeline::graph::{Action, Pipeline};
use crate::plugins::PluginRegistry;
use plugin_api::{ModelBox, NamedTensor};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Loaded models of a manifest by name.
pub struct ManifestModels(pub BTreeMap<String, Arc<ModelBox>>);

impl Models for ManifestModels {
    fn call(
        &self,
        model: &str,
        method: &str,
        inputs: Vec<NamedTensor>,
    ) -> Result<Vec<NamedTensor>, CallError> {
        let m = self.0.get(model).ok_or_else(|| CallError {
            user: false,
            unavailable: false,
            message: format!("model \"{model}\" is not loaded"),
        })?;
        plugin(m.call(method.into(), inputs.into(), "{}".into()))
            .map(|outs| outs.into_vec())
            .map_err(|e| CallError {
                user: kind_of(&e).is_user_error(),
                unavailable: false,
                message: format!("{e:#}"),
            })
    }
}

/// The models a pipeline's steps call.
pub fn models_of(p: &Pipeline) -> Vec<String> {
    let mut names: Vec<String> = p
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Model { model, .. } => Some(model.clone()),
            Action::Op(_) => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Loads (compiling when the manifest says so) the models `p` calls.
pub fn load_models(
    registry: &PluginRegistry,
    manifest: &Manifest,
    p: &Pipeline,
) -> anyhow::Result<ManifestModels> {
    let mut loaded = BTreeMap::new();
    for name in models_of(p) {
        let entry = manifest
            .models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| anyhow::anyhow!("model \"{name}\" is not in the manifest"))?;
        let (_, model) = open_manifest_model(registry, manifest, entry, entry.export.export())?;
        loaded.insert(name, Arc::new(model));
    }
    Ok(ManifestModels(loaded))
}
