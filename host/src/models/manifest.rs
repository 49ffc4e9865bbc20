//! Opening a manifest: its models' directories resolved (Hub ids fetched into the Hugging Face
//! cache, pipelines' `vae` subfolders), its plugins loaded, then its pipelines resolved with what
//! the plugins say of its models (`ModelClass::describe_dir`).

use super::describe::describe;
use super::resolve::{entry_source, manifest_plugins};
use crate::error::{plugin, UsageError};
use crate::manifest::pipelines::ModelDescription;
use crate::manifest::{Manifest, ModelEntry};
use crate::pipeline::graph::ScalingFields;
use crate::plugins::PluginRegistry;
use crate::progress::BarProgress;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Describes a manifest model through the class it names (or the only one loaded).
pub fn describe_entry(
    registry: &PluginRegistry,
    entry: &ModelEntry,
) -> Result<ModelDescription, String> {
    let class = registry
        .select_model_class(entry.class.as_deref())
        .map_err(|e| e.to_string())?;
    let class = registry.model_class(&class).map_err(|e| e.to_string())?;
    let facts = describe(class, &entry.model_id).map_err(|e| format!("{e:#}"))?;
    Ok(ModelDescription {
        vae_scale_factor: facts.vae_scale_factor,
        force_upcast: facts.force_upcast,
        in_channels: facts.in_channels,
        scaling: ScalingFields {
            scaling_factor: facts.scaling_factor,
            shift_factor: facts.shift_factor,
            latents_mean: facts.latents_mean,
            latents_std: facts.latents_std,
        },
    })
}

/// Resolves `manifest`'s pipelines with `registry`'s descriptions of its models.
pub fn resolve_pipelines(manifest: &mut Manifest, registry: &PluginRegistry) -> anyhow::Result<()> {
    manifest
        .resolve_pipelines(&|e| describe_entry(registry, e))
        .map_err(|e| UsageError(e.to_string()).into())
}

/// Sets up each device plugin's devices from `manifest`'s `devices:` entries
/// ([`Manifest::device_configs`], `Device::configure`), before any model loads.
pub fn configure_devices(manifest: &Manifest, registry: &PluginRegistry) -> anyhow::Result<()> {
    for (name, options) in manifest.device_configs() {
        let device = registry.device(&name)?;
        let set =
            plugin(device.configure(options.to_string().as_str().into())).with_context(|| {
                format!(
                    "{}: devices: configuring {name} with {options}",
                    manifest.file.display()
                )
            })?;
        tracing::info!("{name}: devices {set}");
    }
    Ok(())
}

/// Replaces each model's `model_id` by the directory it resolves to (see
/// [`super::resolve::ModelSource::resolve`]): a Hub id's snapshot in the Hugging Face cache (downloading what is
/// missing, progress on stderr), a subfolder, a pipeline's `vae/`.
pub fn resolve_model_dirs(manifest: &mut Manifest) -> anyhow::Result<()> {
    let base = manifest.dir().to_path_buf();
    let file = manifest.file.clone();
    for entry in &mut manifest.models {
        let progress = BarProgress::stderr();
        let base = if entry.hub_id {
            base.as_path()
        } else {
            Path::new("")
        };
        let dir = entry_source(entry).resolve(base, &progress);
        progress.finish();
        entry.model_id =
            dir.with_context(|| format!("{}: model \"{}\"", file.display(), entry.name))?;
        entry.hub_id = false;
        entry.subfolder = None;
        entry.revision = None;
    }
    Ok(())
}

/// Reads `file`, resolves its models' directories, loads the plugins it names (searched in
/// `search`), configures its devices and resolves its pipelines.
pub fn open_manifest(
    file: &Path,
    search: &[PathBuf],
) -> anyhow::Result<(Manifest, PluginRegistry)> {
    let mut manifest = Manifest::load(file).map_err(|e| UsageError(e.to_string()))?;
    resolve_model_dirs(&mut manifest)?;
    let registry = PluginRegistry::load(&manifest_plugins(&manifest, search)?)?;
    configure_devices(&manifest, &registry)?;
    resolve_pipelines(&mut manifest, &registry)?;
    Ok((manifest, registry))
}
