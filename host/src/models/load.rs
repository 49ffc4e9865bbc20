//! `from_pretrained` through the plugins, with one precedence of configuration for every front
//! end (see [`Overrides`]).

use super::resolve::{class_for_dir, Choice};
use crate::error::{path_str, plugin};
use crate::manifest::{Manifest, ModelEntry};
use crate::plugins::PluginRegistry;
use crate::progress::BarProgress;
use anyhow::{anyhow, Context};
use plugin_api::{Export, ModelBox};
use serde_json::{Map, Value};
use std::path::Path;

/// The configuration a model is loaded with, lowest precedence first:
///
/// 1. a compiled directory's stored `rbln_config.json` (the plugin reads it);
/// 2. `rbln_config`: configuration files — a manifest model's `rbln_config` (with the device
///    ids of its `device`), `--rbln-config FILE`, the Triton model's `rbln_config` parameter;
/// 3. `kwargs`: the command line's flags (`--batch-size`, `--sample-size`, `--uses-encoder`) and
///    the values `mlhost run` derives from its input's shape.
///
/// A later level wins over an earlier one; on a compiled directory the plugin refuses a
/// compile-time field that differs from the stored one, naming the field and both values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Level 2: fields from configuration files.
    pub rbln_config: Map<String, Value>,
    /// Level 3: fields from the command line.
    pub kwargs: Map<String, Value>,
}

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadSpec<'a> {
    /// A diffusers or compiled model directory.
    pub dir: &'a Path,
    /// Compile, load, or decide from the directory.
    pub export: Export,
    /// Class, compiler and device.
    pub choice: Choice,
    /// The configuration.
    pub overrides: Overrides,
}

/// Loads `spec.dir` as `class` (compiling it when `spec.export` says so), reporting the
/// compile's progress to `progress`.
pub fn open(
    registry: &PluginRegistry,
    class: &str,
    spec: &LoadSpec,
    progress: &BarProgress,
) -> anyhow::Result<ModelBox> {
    let compiler = registry.select_compiler(spec.choice.compiler.as_deref())?;
    let device = registry.select_device(spec.choice.device.as_deref())?;
    let model = plugin(
        registry.model_class(class)?.from_pretrained(
            path_str(spec.dir)?.into(),
            spec.export,
            Value::Object(spec.overrides.rbln_config.clone())
                .to_string()
                .as_str()
                .into(),
            Value::Object(spec.overrides.kwargs.clone())
                .to_string()
                .as_str()
                .into(),
            registry.backend(&compiler, &device)?,
            &progress.to_box(),
        ),
    )?;
    progress.finish();
    Ok(model)
}

/// `from_pretrained(export=auto)` of `spec.dir` as `mlhost run` and the Triton backend do: the
/// class is the chosen one or the one that recognizes the directory; returns it with the model.
pub fn open_dir(
    registry: &PluginRegistry,
    spec: &LoadSpec,
    progress: &BarProgress,
) -> anyhow::Result<(String, ModelBox)> {
    let dir = path_str(spec.dir)?;
    let class = class_for_dir(registry, spec.choice.class.as_deref(), dir)?;
    let compiled = registry.model_class(&class)?.is_compiled_dir(dir.into());
    let model = open(registry, &class, spec, progress).with_context(|| {
        if compiled {
            format!("loading compiled {class} from {dir}")
        } else {
            format!("compiling {dir} as {class}")
        }
    })?;
    Ok((class, model))
}

/// Loads (compiling if `export` says so) one manifest model; returns its class and the model.
/// The manifest's `device` picks the device plugin (and its compiler when it provides one) and
/// adds its ids as `device` to the model's `rbln_config` unless that sets one.
pub fn open_manifest_model(
    registry: &PluginRegistry,
    manifest: &Manifest,
    entry: &ModelEntry,
    export: Export,
) -> anyhow::Result<(String, ModelBox)> {
    let class = registry.select_model_class(entry.class.as_deref())?;
    if let Some(plugin) = &entry.plugin {
        let provider = &registry.model_classes[&class].plugin;
        let actual = registry.plugin(*provider).info.name.as_str();
        if actual != plugin {
            return Err(anyhow!(
                "{}: model \"{}\": class {class} comes from plugin {actual}, not {plugin}",
                manifest.file.display(),
                entry.name
            ));
        }
    }
    let device = entry.device.as_deref().and_then(|d| manifest.device(d));
    let mut rbln_config = entry.rbln_config.clone();
    if let Some(dev) = device {
        if !rbln_config.contains_key("device") {
            match dev.ids[..] {
                [] => {}
                [one] => {
                    rbln_config.insert("device".into(), one.into());
                }
                _ => {
                    rbln_config.insert("device".into(), dev.ids.clone().into());
                }
            }
        }
    }
    let plugin_name = device.map(|d| d.plugin.clone());
    let spec = LoadSpec {
        dir: &entry.model_id,
        export,
        choice: Choice {
            class: Some(class.clone()),
            compiler: plugin_name
                .clone()
                .filter(|p| registry.compilers.contains_key(p)),
            device: plugin_name,
        },
        overrides: Overrides {
            rbln_config,
            kwargs: {
                let mut kwargs = Map::new();
                super::resolve::entry_source(entry).add_variant(&mut kwargs);
                kwargs
            },
        },
    };
    let model = open(registry, &class, &spec, &BarProgress::hidden()).with_context(|| {
        format!(
            "{}: model \"{}\" ({})",
            manifest.file.display(),
            entry.name,
            entry.model_id.display()
        )
    })?;
    Ok((class, model))
}
