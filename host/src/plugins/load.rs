//! Opening one library file and deciding whether it is a usable mlhost plugin.
//!
//! A directory scan first reads each library's exported symbols ([`candidate`]) and opens only
//! those exporting abi_stable's root module. Order of checks: the file must open and export an abi_stable root module (else it is not a
//! plugin and is skipped); the module must be named `mlhost_plugin` (else skipped); its
//! plugin-api version must be compatible (checked here before abi_stable's own check, so the error
//! names both versions); then abi_stable checks the root module layout and runs the constructor.

use super::error::RegistryError;
use object::Object;
use plugin_api::abi_stable::library::{
    lib_header_from_path, LibraryError, RootModule, ROOT_MODULE_LOADER_NAME,
};
use plugin_api::abi_stable::sabi_types::{VersionNumber, VersionStrings};
use plugin_api::PluginRootRef;
use std::path::{Path, PathBuf};

/// The plugin-api version this host was built against.
pub fn host_abi_version() -> &'static str {
    PluginRootRef::VERSION_STRINGS.version.as_str()
}

/// Returns true for file names that may be dynamic libraries: `lib*.so`, `*.dylib`, `*.dll`.
pub fn is_library_file_name(name: &str) -> bool {
    (name.starts_with("lib") && name.ends_with(".so"))
        || name.ends_with(".dylib")
        || name.ends_with(".dll")
}

/// What loading one library file found.
pub(super) enum Probe {
    /// An mlhost plugin, checked and initialized.
    Plugin(PluginRootRef),
    /// A library that is not an mlhost plugin, and why.
    NotAPlugin(String),
}

pub(super) fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// The library files to consider in directory `path`, sorted by name.
pub(super) fn library_files(path: &Path) -> Result<Vec<PathBuf>, RegistryError> {
    let meta = std::fs::metadata(path).map_err(|e| RegistryError::MissingPath {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !meta.is_dir() {
        return Err(RegistryError::MissingPath {
            path: path.to_path_buf(),
            reason: "not a directory or a library file".into(),
        });
    }
    let entries = std::fs::read_dir(path).map_err(|e| RegistryError::MissingPath {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| RegistryError::MissingPath {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let file = entry.path();
        if is_library_file_name(name) && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Whether a library file in a scanned directory may be an mlhost plugin, decided without
/// loading it (no foreign code runs): it must be a shared library that exports abi_stable's
/// root-module symbol. `Err` says why not.
pub(super) fn candidate(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let data = object::ReadCache::new(file);
    let obj =
        object::File::parse(&data).map_err(|e| format!("it is not a shared library ({e})"))?;
    let exports = obj
        .exports()
        .map_err(|e| format!("cannot read its exported symbols: {e}"))?;
    let want = ROOT_MODULE_LOADER_NAME.as_bytes();
    // Mach-O prefixes C symbol names with `_`.
    let exported = exports
        .iter()
        .any(|e| e.name() == want || e.name().strip_prefix(b"_") == Some(want));
    if exported {
        Ok(())
    } else {
        Err("it does not export an abi_stable root module, so it is not an mlhost plugin".into())
    }
}

/// Opens a library and, if it exports an mlhost root module, checks and initializes it.
pub(super) fn probe(path: &Path) -> Result<Probe, RegistryError> {
    let header = match lib_header_from_path(path) {
        Ok(header) => header,
        Err(LibraryError::GetSymbolError { .. }) => {
            return Ok(Probe::NotAPlugin(
                "it does not export an abi_stable root module".to_string(),
            ))
        }
        Err(LibraryError::OpenError { err, .. }) => {
            return Err(RegistryError::Open {
                path: path.to_path_buf(),
                reason: err.to_string(),
            })
        }
        Err(other) => {
            return Err(RegistryError::AbiStable {
                path: path.to_path_buf(),
                details: other.to_string().trim().to_string(),
            })
        }
    };
    let consts = header.root_mod_consts();
    let module_name = consts.name().as_str();
    if module_name != PluginRootRef::NAME {
        return Ok(Probe::NotAPlugin(format!(
            "its root module is `{module_name}`, not `{}`",
            PluginRootRef::NAME
        )));
    }
    let plugin_version = consts.version_strings();
    if !versions_compatible(PluginRootRef::VERSION_STRINGS, plugin_version) {
        return Err(incompatible_version(path, plugin_version.version.as_str()));
    }
    header
        .init_root_module::<PluginRootRef>()
        .map(Probe::Plugin)
        .map_err(|e| match e {
            LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
                incompatible_version(path, &actual_version.to_string())
            }
            LibraryError::AbiInstability(details) => RegistryError::IncompatibleLayout {
                path: path.to_path_buf(),
                plugin: plugin_name_from_path(path),
                plugin_version: plugin_version.version.as_str().to_string(),
                host_version: host_abi_version().to_string(),
                details: details.to_string().trim().to_string(),
            },
            other => RegistryError::Init {
                path: path.to_path_buf(),
                details: other.to_string().trim().to_string(),
            },
        })
}

fn incompatible_version(path: &Path, plugin_version: &str) -> RegistryError {
    RegistryError::IncompatibleVersion {
        path: path.to_path_buf(),
        plugin: plugin_name_from_path(path),
        plugin_version: plugin_version.to_string(),
        host_version: host_abi_version().to_string(),
    }
}

/// The plugin-api compatibility rule: same major version, and for `0.y` also the same minor.
pub fn versions_compatible(host: VersionStrings, plugin: VersionStrings) -> bool {
    match (VersionNumber::new(host), VersionNumber::new(plugin)) {
        (Ok(h), Ok(p)) => h.major == p.major && (h.major != 0 || h.minor == p.minor),
        _ => false,
    }
}

/// A plugin's name as far as it can be known without initializing it: the file stem without
/// the `lib` prefix, with `_` as `-` (`librbln_npu.so` -> `rbln-npu`).
pub fn plugin_name_from_path(path: &Path) -> String {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("unknown");
    let stem = stem.strip_prefix("lib").unwrap_or(stem);
    stem.replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_rule() {
        let v = VersionStrings::new;
        assert!(versions_compatible(v("0.1.0"), v("0.1.7")));
        assert!(!versions_compatible(v("0.1.0"), v("0.2.0")));
        assert!(!versions_compatible(v("0.2.0"), v("0.1.0")));
        assert!(!versions_compatible(v("0.1.0"), v("99.0.0")));
        assert!(versions_compatible(v("1.2.0"), v("1.0.3")));
        assert!(!versions_compatible(v("1.0.0"), v("not-a-version")));
    }

    #[test]
    fn library_names() {
        assert!(is_library_file_name("librbln_npu.so"));
        assert!(is_library_file_name("rbln_npu.dll"));
        assert!(is_library_file_name("librbln_npu.dylib"));
        assert!(!is_library_file_name("rbln_npu.so"));
        assert!(!is_library_file_name("librbln_npu.rlib"));
        assert!(!is_library_file_name("librbln_npu.d"));
        assert_eq!(
            plugin_name_from_path(Path::new("/x/librbln_npu.so")),
            "rbln-npu"
        );
    }
}
