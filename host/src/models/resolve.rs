//! Resolution: the directory a model is read from (a local directory or a Hugging Face Hub
//! id), the plugin files a manifest names, and the class / compiler / device a model uses.

use crate::error::{ErrorKind, KindError, UsageError};
use crate::hub::names::{check_repo_path, check_variant};
use crate::hub::{Hub, RepoId, Settings};
use crate::manifest::{Manifest, ModelEntry};
use crate::plugins::{is_library_file_name, join_paths, PluginRegistry};
use anyhow::Context;
use plugin_api::Progress;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Where a model comes from, as the user named it (`mlhost compile ID --subfolder vae
/// --revision main --variant fp16`, a manifest's `model_id` and its fields of the same names,
/// the Triton backend's `model_dir` parameter and its siblings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelSource {
    /// A directory (relative paths against the caller's base), or, when no such path exists, a
    /// Hub id `org/name`.
    pub id: String,
    /// A subfolder of the directory or repository (default: `vae` when it holds
    /// `model_index.json`, a diffusers pipeline; else none).
    pub subfolder: Option<String>,
    /// A Hub revision: branch, tag or commit (default `main`); only for Hub ids.
    pub revision: Option<String>,
    /// The weights variant: `diffusion_pytorch_model.<variant>.safetensors`. Passed to the model
    /// plugin as the `variant` keyword of `from_pretrained`, which reads that file.
    pub variant: Option<String>,
}

/// The file of a diffusers pipeline's root that names its parts.
pub const PIPELINE_INDEX: &str = "model_index.json";
/// The part of a pipeline a model id names by default.
pub const DEFAULT_PART: &str = "vae";

/// The diffusers weights file of `variant`.
pub fn weights_file(variant: Option<&str>) -> String {
    match variant {
        Some(v) => format!("diffusion_pytorch_model.{v}.safetensors"),
        None => "diffusion_pytorch_model.safetensors".into(),
    }
}

impl ModelSource {
    /// A plain directory.
    pub fn dir(path: &Path) -> ModelSource {
        ModelSource {
            id: path.display().to_string(),
            ..ModelSource::default()
        }
    }

    /// Checks the fields' forms (not whether anything exists).
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(s) = &self.subfolder {
            check_repo_path(s, "subfolder")?;
        }
        if let Some(r) = &self.revision {
            crate::hub::names::check_revision(r)?;
        }
        if let Some(v) = &self.variant {
            check_variant(v)?;
        }
        Ok(())
    }

    /// Adds `variant` to keyword arguments of `from_pretrained`.
    pub fn add_variant(&self, kwargs: &mut Map<String, Value>) {
        if let Some(v) = &self.variant {
            kwargs.insert("variant".into(), Value::String(v.clone()));
        }
    }

    /// The local directory to load: `base/id` (or its subfolder) when that path exists, else
    /// the snapshot of Hub id `id` in the Hugging Face cache, with `config.json` and the
    /// variant's weights fetched if missing (settings from the environment, progress of
    /// downloads to `progress`).
    pub fn resolve(&self, base: &Path, progress: &dyn Progress) -> anyhow::Result<PathBuf> {
        self.resolve_with(base, &mut || Ok(Hub::new(Settings::from_env()?)), progress)
    }

    /// [`ModelSource::resolve`] with the Hub session `hub` makes (called only for a Hub id).
    pub fn resolve_with(
        &self,
        base: &Path,
        hub: &mut dyn FnMut() -> anyhow::Result<Hub>,
        progress: &dyn Progress,
    ) -> anyhow::Result<PathBuf> {
        self.check()?;
        let local = base.join(&self.id);
        if local.exists() {
            return self.resolve_local(&local);
        }
        let id = RepoId::parse(&self.id).map_err(|e| {
            UsageError(format!(
                "model {} does not exist: it is no local directory, and {e}",
                local.display()
            ))
        })?;
        let revision = self.revision.as_deref().unwrap_or("main");
        let context = || {
            format!(
                "{} is no local directory, so it names a Hugging Face Hub model",
                local.display()
            )
        };
        let mut hub = hub().with_context(context)?;
        self.resolve_hub(&mut hub, &id, revision, progress)
            .with_context(context)
    }

    fn resolve_local(&self, local: &Path) -> anyhow::Result<PathBuf> {
        if let Some(r) = &self.revision {
            return Err(UsageError(format!(
                "revision \"{r}\" applies to a Hugging Face Hub id; {} is a local directory",
                local.display()
            ))
            .into());
        }
        let dir = match &self.subfolder {
            Some(s) => s.split('/').fold(local.to_path_buf(), |p, c| p.join(c)),
            None if local.join(PIPELINE_INDEX).is_file() => {
                let part = local.join(DEFAULT_PART);
                if !part.is_dir() {
                    return Err(UsageError(format!(
                        "{} holds {PIPELINE_INDEX} (a diffusers pipeline) but no {DEFAULT_PART}/                          subfolder; name the part with --subfolder (manifest: subfolder)",
                        local.display()
                    ))
                    .into());
                }
                part
            }
            None => return Ok(local.to_path_buf()),
        };
        if !dir.is_dir() {
            return Err(
                UsageError(format!("model directory {} does not exist", dir.display())).into(),
            );
        }
        Ok(dir)
    }

    fn resolve_hub(
        &self,
        hub: &mut Hub,
        id: &RepoId,
        revision: &str,
        progress: &dyn Progress,
    ) -> anyhow::Result<PathBuf> {
        let subfolder = match &self.subfolder {
            Some(s) => Some(s.clone()),
            None => hub
                .probe(id, revision, PIPELINE_INDEX, progress)?
                .map(|_| DEFAULT_PART.to_string()),
        };
        let prefix = subfolder.map(|s| format!("{s}/")).unwrap_or_default();
        let mut dir = None;
        for file in [
            format!("{prefix}config.json"),
            format!("{prefix}{}", weights_file(self.variant.as_deref())),
        ] {
            let path = hub.file(id, revision, &file, progress)?.ok_or_else(|| {
                KindError::new(
                    ErrorKind::NotFound,
                    format!(
                        "{id} has no file {file} at revision \"{revision}\"{}",
                        match &self.variant {
                            Some(v) => format!(" (variant \"{v}\")"),
                            None => String::new(),
                        }
                    ),
                )
            })?;
            dir = path.parent().map(Path::to_path_buf);
        }
        dir.ok_or_else(|| anyhow::anyhow!("{id}: no snapshot directory"))
    }
}

/// Which model class, compiler and device to use; `None` picks the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choice {
    /// Model class (default: the one that recognizes the directory as compiled, else the only
    /// one loaded).
    pub class: Option<String>,
    /// Compiler (default: the only one loaded, else rbln-npu).
    pub compiler: Option<String>,
    /// Device (default: the only one loaded, else rbln-npu).
    pub device: Option<String>,
}

/// The source a manifest model names: its `model_id` (a path already joined to the manifest's
/// directory, or a Hub id) with `subfolder`, `revision` and `variant`.
pub fn entry_source(entry: &ModelEntry) -> ModelSource {
    ModelSource {
        id: entry.model_id.display().to_string(),
        subfolder: entry.subfolder.clone(),
        revision: entry.revision.clone(),
        variant: entry.variant.clone(),
    }
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
            if is_plugin_path(p) {
                return Ok(manifest.dir().join(p));
            }
            let file = library_file_name(&p.replace('-', "_"));
            search
                .iter()
                .map(|d| d.join(&file))
                .find(|f| f.is_file())
                .ok_or_else(|| {
                    anyhow::Error::from(KindError::new(
                        ErrorKind::NotFound,
                        format!(
                            "{}: plugins: no library {file} for plugin \"{p}\" in {}",
                            manifest.file.display(),
                            join_paths(search)
                        ),
                    ))
                })
        })
        .collect()
}

/// True if a manifest's `plugins` entry is a path (resolved against the manifest's directory)
/// rather than a plugin name.
pub fn is_plugin_path(entry: &str) -> bool {
    entry.contains('/') || is_library_file_name(entry)
}

/// The platform's file name of the library `name` (`lib<name>.so` on Linux).
pub fn library_file_name(name: &str) -> String {
    if cfg!(target_os = "windows") {
        format!("{name}.dll")
    } else if cfg!(target_os = "macos") {
        format!("lib{name}.dylib")
    } else {
        format!("lib{name}.so")
    }
}

/// The class to use for `dir`: the chosen one, else the one that recognizes `dir` as compiled,
/// else the only one loaded.
pub fn class_for_dir(
    registry: &PluginRegistry,
    class: Option<&str>,
    dir: &str,
) -> anyhow::Result<String> {
    if let Some(name) = class {
        return Ok(registry.select_model_class(Some(name))?);
    }
    let recognizing: Vec<&String> = registry
        .model_classes
        .iter()
        .filter(|(_, p)| p.item.is_compiled_dir(dir.into()))
        .map(|(name, _)| name)
        .collect();
    match recognizing[..] {
        [one] => Ok(one.clone()),
        _ => Ok(registry.select_model_class(None)?),
    }
}
