//! Resolution: the plugin files a manifest names, and the class / compiler / device a model
//! uses.

use crate::error::{ErrorKind, KindError};
use crate::manifest::Manifest;
use crate::plugins::{is_library_file_name, join_paths, PluginRegistry};
use std::path::PathBuf;

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
