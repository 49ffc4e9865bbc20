//! Loading what to serve: plugins and models from a manifest, or every compiled model directory
//! of a model repository. Each model is warmed up (one call per method on zeros) before it is
//! handed to the batchers.

use crate::manifest::{Manifest, ModelEntry, ServingOptions};
use crate::plugins::PluginRegistry;
use crate::progress::BarProgress;
use anyhow::{anyhow, Context};
use plugin_api::{Export, ModelBox, NamedTensor, Tensor};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batcher::MethodSig;

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

/// The plugin files a manifest asks for: bare names are searched in `search`, paths resolve
/// against the manifest's directory. Empty: `search` itself.
pub fn manifest_plugins(manifest: &Manifest, search: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    if manifest.plugins.is_empty() {
        return Ok(search.to_vec());
    }
    manifest
        .plugins
        .iter()
        .map(|p| {
            let is_path = p.contains('/') || crate::plugins::is_library_file_name(p);
            if is_path {
                return Ok(manifest.dir().join(p));
            }
            let file = library_file_name(&p.replace('-', "_"));
            search
                .iter()
                .map(|d| d.join(&file))
                .find(|f| f.is_file())
                .ok_or_else(|| {
                    anyhow!(
                        "{}: plugins: no library {file} for plugin \"{p}\" in {}",
                        manifest.file.display(),
                        crate::plugins::join_paths(search)
                    )
                })
        })
        .collect()
}

fn library_file_name(name: &str) -> String {
    if cfg!(target_os = "windows") {
        format!("{name}.dll")
    } else if cfg!(target_os = "macos") {
        format!("lib{name}.dylib")
    } else {
        format!("lib{name}.so")
    }
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

/// Loads (compiling if `export` says so) one manifest model without warming it up; returns its
/// class and the model.
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
    let plugin_name = device.map(|d| d.plugin.as_str());
    let model = load(
        registry,
        &class,
        &entry.model_id,
        export,
        &Value::Object(rbln_config),
        plugin_name,
    )
    .with_context(|| {
        format!(
            "{}: model \"{}\" ({})",
            manifest.file.display(),
            entry.name,
            entry.model_id.display()
        )
    })?;
    Ok((class, model))
}

/// Loads the compiled model in `dir` (a model repository entry) with default serving options.
pub fn load_repository_model(registry: &PluginRegistry, dir: &Path) -> anyhow::Result<LoadedModel> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{}: not a UTF-8 directory name", dir.display()))?
        .to_string();
    let dir_str = crate::cli::path_str(dir)?;
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
    let model = load(
        registry,
        &class,
        dir,
        Export::No,
        &Value::Object(Default::default()),
        None,
    )
    .with_context(|| format!("loading {}", dir.display()))?;
    finish(name, class, model, ServingOptions::default())
}

fn load(
    registry: &PluginRegistry,
    class: &str,
    dir: &Path,
    export: Export,
    rbln_config: &Value,
    plugin: Option<&str>,
) -> anyhow::Result<ModelBox> {
    let compiler = match plugin.filter(|p| registry.compilers.contains_key(*p)) {
        Some(p) => p.to_string(),
        None => registry.select_compiler(None)?,
    };
    let device = registry.select_device(plugin)?;
    let progress = BarProgress::hidden();
    let model = crate::cli::plugin(registry.model_class(class)?.from_pretrained(
        crate::cli::path_str(dir)?.into(),
        export,
        rbln_config.to_string().as_str().into(),
        "{}".into(),
        registry.backend(&compiler, &device)?,
        &progress.to_box(),
    ))?;
    Ok(model)
}

/// Reads the methods' signatures and runs each once on zeros.
fn finish(
    name: String,
    class: String,
    model: ModelBox,
    serving: ServingOptions,
) -> anyhow::Result<LoadedModel> {
    let mut methods = Vec::new();
    for spec in model.methods().into_vec() {
        let method = spec.name.to_string();
        let [input] = spec.inputs.as_slice() else {
            return Err(anyhow!(
                "model \"{name}\": method {method} takes {} inputs; only single-input methods \
                 can be served",
                spec.inputs.len()
            ));
        };
        let shape = input.shape();
        let Some((&batch, dims)) = shape.split_first() else {
            return Err(anyhow!(
                "model \"{name}\": {method} input has no batch dimension"
            ));
        };
        let sig = MethodSig {
            method: method.clone(),
            input: (input.name.to_string(), dims.to_vec()),
            outputs: spec
                .outputs
                .iter()
                .map(|o| {
                    (
                        o.name.to_string(),
                        o.shape().get(1..).unwrap_or(&[]).to_vec(),
                    )
                })
                .collect(),
            batch,
        };
        let zeros = NamedTensor::new(sig.input.0.clone(), Tensor::zeros(shape.clone()));
        let outs =
            crate::cli::plugin(model.call(method.as_str().into(), vec![zeros].into(), "{}".into()))
                .with_context(|| format!("warming up {name}.{method}"))?;
        for (out_name, _) in &sig.outputs {
            if !outs.iter().any(|t| t.name.as_str() == out_name) {
                return Err(anyhow!(
                    "warming up {name}.{method}: no output `{out_name}`"
                ));
            }
        }
        tracing::info!("{name}.{method}: warmed up (batch {batch})");
        methods.push(sig);
    }
    Ok(LoadedModel {
        name,
        class,
        model: Arc::new(model),
        methods,
        serving,
    })
}
