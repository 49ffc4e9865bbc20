//! Plugin discovery, loading, and the registry of what the loaded plugins provide.
//!
//! Each plugin is loaded with `lib_header_from_path(..)?.init_root_module::<PluginRootRef>()`,
//! never with `RootModule::load_from_file`, which caches one library per root-module type and
//! would silently hand back the first plugin for every later path.

use plugin_api::{CompilerBox, DeviceBox, ModelClassBox, PluginInfo};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod backend;
mod error;
mod load;

pub use error::RegistryError;
use load::{candidate, canonical, library_files, probe, Probe};
pub use load::{
    host_abi_version, is_library_file_name, plugin_name_from_path, versions_compatible,
};

/// The environment variable holding a path list of plugin directories.
pub const PLUGIN_DIR_ENV: &str = "MLHOST_PLUGIN_DIR";

/// Where plugins are looked for, in priority order: explicit directories (`--plugin-dir`), else
/// the `MLHOST_PLUGIN_DIR` path list, else the directory of the running executable.
pub fn plugin_search_path(explicit: &[PathBuf]) -> Result<Vec<PathBuf>, RegistryError> {
    if !explicit.is_empty() {
        return Ok(explicit.to_vec());
    }
    if let Some(list) = std::env::var_os(PLUGIN_DIR_ENV) {
        let dirs: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !dirs.is_empty() {
            return Ok(dirs);
        }
    }
    let exe = std::env::current_exe().map_err(|e| RegistryError::NoExeDir(e.to_string()))?;
    match exe.parent() {
        Some(dir) => Ok(vec![dir.to_path_buf()]),
        None => Err(RegistryError::NoExeDir(format!(
            "{} has no parent directory",
            exe.display()
        ))),
    }
}

/// One loaded plugin library.
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// What the plugin says about itself.
    pub info: PluginInfo,
}

/// Something a plugin provides, with the index of that plugin in [`PluginRegistry::plugins`].
pub struct Provided<T> {
    /// Index into [`PluginRegistry::plugins`].
    pub plugin: usize,
    /// The shared trait object.
    pub item: Arc<T>,
}

/// Everything the loaded plugins provide, by name.
#[derive(Default)]
pub struct PluginRegistry {
    /// The loaded plugins, in load order.
    pub plugins: Vec<LoadedPlugin>,
    /// Compilers by name.
    pub compilers: BTreeMap<String, Provided<CompilerBox>>,
    /// Devices by name.
    pub devices: BTreeMap<String, Provided<DeviceBox>>,
    /// Model classes by name.
    pub model_classes: BTreeMap<String, Provided<ModelClassBox>>,
    /// The directories and files that were searched.
    pub searched: Vec<PathBuf>,
}

impl fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginRegistry")
            .field("plugins", &self.plugins)
            .field("compilers", &self.compilers.keys().collect::<Vec<_>>())
            .field("devices", &self.devices.keys().collect::<Vec<_>>())
            .field(
                "model_classes",
                &self.model_classes.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl PluginRegistry {
    /// Loads every plugin found in `paths`. A directory is scanned (non-recursively, in file-name
    /// order) for library files; a file is loaded as a plugin. Libraries that are not mlhost
    /// plugins are skipped; a plugin that fails to load is an error.
    pub fn load(paths: &[PathBuf]) -> Result<PluginRegistry, RegistryError> {
        let mut registry = PluginRegistry {
            searched: paths.to_vec(),
            ..PluginRegistry::default()
        };
        let mut seen = std::collections::HashSet::new();
        for path in paths {
            if path.is_file() {
                if seen.insert(canonical(path)) && !registry.load_file(path)? {
                    return Err(RegistryError::NotAPlugin {
                        path: path.clone(),
                        reason: "it does not export an mlhost plugin root module".into(),
                    });
                }
                continue;
            }
            for file in library_files(path)? {
                if !seen.insert(canonical(&file)) {
                    continue;
                }
                // Libraries that cannot be plugins (the Triton backend, other cdylibs beside
                // mlhost) are never opened; `-v` says why each was skipped.
                if let Err(why) = candidate(&file) {
                    tracing::info!("skipping {}: {why}", file.display());
                    continue;
                }
                match registry.load_file(&file) {
                    Ok(_) => {}
                    // A file in a scanned directory that the loader cannot open at all (wrong
                    // architecture, unresolved symbols) may not be meant as a plugin: warn only.
                    Err(RegistryError::Open { path, reason }) => {
                        tracing::warn!("skipping {}: cannot load it: {reason}", path.display())
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(registry)
    }

    /// Loads one library file, registering what it provides if it is an mlhost plugin.
    /// Returns false (and logs at debug level) if it is a loadable library but not an mlhost
    /// plugin; fails if it cannot be opened or is an mlhost plugin that cannot be used.
    pub fn load_file(&mut self, path: &Path) -> Result<bool, RegistryError> {
        let root = match probe(path)? {
            Probe::Plugin(root) => root,
            Probe::NotAPlugin(why) => {
                tracing::debug!("skipping {}: {why}", path.display());
                return Ok(false);
            }
        };
        let info = root.info()();
        let index = self.plugins.len();
        let plugin = LoadedPlugin {
            path: path.to_path_buf(),
            info,
        };
        tracing::info!(
            "loaded plugin {} {} from {}",
            plugin.info.name,
            plugin.info.version,
            path.display()
        );
        let compilers = root.compilers()();
        let devices = root.devices()();
        let classes = root.model_classes()();
        self.plugins.push(plugin);
        for c in compilers {
            let name = c.name().into_string();
            insert(
                &mut self.compilers,
                &self.plugins,
                "compiler",
                name,
                index,
                c,
            )?;
        }
        for d in devices {
            let name = d.name().into_string();
            insert(&mut self.devices, &self.plugins, "device", name, index, d)?;
        }
        for m in classes {
            let name = m.name().into_string();
            insert(
                &mut self.model_classes,
                &self.plugins,
                "model class",
                name,
                index,
                m,
            )?;
        }
        Ok(true)
    }

    /// The compiler named `name`.
    pub fn compiler(&self, name: &str) -> Result<&Arc<CompilerBox>, RegistryError> {
        lookup(&self.compilers, "compiler", name, "--compiler")
    }

    /// The device named `name`.
    pub fn device(&self, name: &str) -> Result<&Arc<DeviceBox>, RegistryError> {
        lookup(&self.devices, "device", name, "--device")
    }

    /// The model class named `name`.
    pub fn model_class(&self, name: &str) -> Result<&Arc<ModelClassBox>, RegistryError> {
        lookup(&self.model_classes, "model class", name, "--class")
    }

    /// The plugin that provides an item registered at `index`.
    pub fn plugin(&self, index: usize) -> &LoadedPlugin {
        &self.plugins[index]
    }

    /// `name` if given, else the only loaded model class.
    pub fn select_model_class(&self, name: Option<&str>) -> Result<String, RegistryError> {
        self.select(&self.model_classes, "model class", name, None, "--class")
    }

    /// `name` if given, else the only loaded compiler, else `rbln-npu`.
    pub fn select_compiler(&self, name: Option<&str>) -> Result<String, RegistryError> {
        self.select(
            &self.compilers,
            "compiler",
            name,
            Some("rbln-npu"),
            "--compiler",
        )
    }

    /// `name` if given, else the only loaded device, else `rbln-npu`.
    pub fn select_device(&self, name: Option<&str>) -> Result<String, RegistryError> {
        self.select(&self.devices, "device", name, Some("rbln-npu"), "--device")
    }

    fn select<T>(
        &self,
        map: &BTreeMap<String, Provided<T>>,
        kind: &'static str,
        name: Option<&str>,
        fallback: Option<&str>,
        flag: &'static str,
    ) -> Result<String, RegistryError> {
        if let Some(name) = name {
            lookup(map, kind, name, flag)?;
            return Ok(name.to_string());
        }
        if map.len() == 1 {
            return Ok(map.keys().next().cloned().unwrap_or_default());
        }
        if let Some(fallback) = fallback.filter(|f| map.contains_key(*f)) {
            return Ok(fallback.to_string());
        }
        if map.is_empty() {
            return Err(RegistryError::NoneLoaded {
                kind,
                searched: join_paths(&self.searched),
            });
        }
        Err(RegistryError::Ambiguous {
            kind,
            available: map.keys().cloned().collect::<Vec<_>>().join(", "),
            flag,
        })
    }
}

fn insert<T>(
    map: &mut BTreeMap<String, Provided<T>>,
    plugins: &[LoadedPlugin],
    kind: &'static str,
    name: String,
    plugin: usize,
    item: T,
) -> Result<(), RegistryError> {
    if let Some(existing) = map.get(&name) {
        return Err(RegistryError::Duplicate {
            kind,
            name,
            first: plugins[existing.plugin].path.clone(),
            second: plugins[plugin].path.clone(),
        });
    }
    let item = Arc::new(item);
    map.insert(name, Provided { plugin, item });
    Ok(())
}

fn lookup<'a, T>(
    map: &'a BTreeMap<String, Provided<T>>,
    kind: &'static str,
    name: &str,
    flag: &'static str,
) -> Result<&'a Arc<T>, RegistryError> {
    map.get(name)
        .map(|p| &p.item)
        .ok_or_else(|| RegistryError::NotFound {
            kind,
            name: name.to_string(),
            available: if map.is_empty() {
                "none".to_string()
            } else {
                map.keys().cloned().collect::<Vec<_>>().join(", ")
            },
            flag,
        })
}

pub(crate) fn join_paths(paths: &[PathBuf]) -> String {
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    list.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dir_is_an_error_naming_it() {
        let e = PluginRegistry::load(&[PathBuf::from("/nonexistent/plugins")]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/plugins"), "{e}");
    }

    #[test]
    fn empty_registry_selection_errors() {
        let r = PluginRegistry {
            searched: vec![PathBuf::from("/p")],
            ..PluginRegistry::default()
        };
        let e = r.select_model_class(None).unwrap_err();
        assert!(e.to_string().contains("/p"), "{e}");
        let e = r.select_compiler(Some("x")).unwrap_err();
        assert!(e.to_string().contains("no compiler named \"x\""), "{e}");
    }
}
