//! Errors of plugin loading and lookup.

use std::path::PathBuf;

/// Why plugins could not be loaded or a compiler / device / model class could not be found.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A `--plugin-dir` / `MLHOST_PLUGIN_DIR` entry does not exist or cannot be read.
    #[error("plugin path {path} cannot be read: {reason}")]
    MissingPath {
        /// The directory or file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The executable's directory (the default search path) could not be determined.
    #[error("cannot find the directory of the running executable to look for plugins: {0}")]
    NoExeDir(String),
    /// The dynamic loader refused the file.
    #[error("cannot load library {path}: {reason}")]
    Open {
        /// The library file.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// A library file given explicitly is not an mlhost plugin.
    #[error("{path} is not an mlhost plugin: {reason}")]
    NotAPlugin {
        /// The library file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The library was built with an incompatible abi_stable.
    #[error("library {path} uses an abi_stable incompatible with this host: {details}")]
    AbiStable {
        /// The library file.
        path: PathBuf,
        /// abi_stable's message.
        details: String,
    },
    /// An mlhost plugin built against an incompatible plugin-api version.
    #[error(
        "plugin {path} ({plugin}) was built against plugin-api {plugin_version}, \
         this host uses {host_version}; rebuild the plugin against plugin-api {host_version}"
    )]
    IncompatibleVersion {
        /// The library file.
        path: PathBuf,
        /// The plugin's name as derived from the file name.
        plugin: String,
        /// The plugin-api version the plugin was built against.
        plugin_version: String,
        /// The plugin-api version of this host.
        host_version: String,
    },
    /// An mlhost plugin whose root module layout differs from this host's.
    #[error(
        "plugin {path} ({plugin}, built against plugin-api {plugin_version}) has a root module \
         layout incompatible with this host's plugin-api {host_version}: {details}"
    )]
    IncompatibleLayout {
        /// The library file.
        path: PathBuf,
        /// The plugin's name as derived from the file name.
        plugin: String,
        /// The plugin-api version the plugin was built against.
        plugin_version: String,
        /// The plugin-api version of this host.
        host_version: String,
        /// abi_stable's description of the difference.
        details: String,
    },
    /// The plugin's root module constructor failed.
    #[error("plugin {path} failed to initialize: {details}")]
    Init {
        /// The library file.
        path: PathBuf,
        /// What went wrong.
        details: String,
    },
    /// Two plugins provide the same name.
    #[error("{kind} {name:?} is provided by two plugins: {} and {}", first.display(), second.display())]
    Duplicate {
        /// `compiler`, `device` or `model class`.
        kind: &'static str,
        /// The duplicated name.
        name: String,
        /// The plugin loaded first.
        first: PathBuf,
        /// The plugin loaded second.
        second: PathBuf,
    },
    /// No item of that name is loaded.
    #[error("no {kind} named {name:?} is loaded (available: {available}); check {flag}")]
    NotFound {
        /// `compiler`, `device` or `model class`.
        kind: &'static str,
        /// The requested name.
        name: String,
        /// The loaded names.
        available: String,
        /// The command line flag that selects it.
        flag: &'static str,
    },
    /// Nothing of that kind is loaded.
    #[error(
        "no plugin provides a {kind} (searched: {searched}); pass --plugin-dir DIR or set \
         MLHOST_PLUGIN_DIR"
    )]
    NoneLoaded {
        /// `compiler`, `device` or `model class`.
        kind: &'static str,
        /// The searched paths.
        searched: String,
    },
    /// Several items of that kind are loaded and none was chosen.
    #[error("several {kind}s are loaded ({available}); choose one with {flag}")]
    Ambiguous {
        /// `compiler`, `device` or `model class`.
        kind: &'static str,
        /// The loaded names.
        available: String,
        /// The command line flag that selects it.
        flag: &'static str,
    },
}

impl RegistryError {
    /// True if the user asked for something that does not exist or is ambiguous (exit code 2),
    /// false for broken plugins.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            RegistryError::MissingPath { .. }
                | RegistryError::NotFound { .. }
                | RegistryError::NoneLoaded { .. }
                | RegistryError::Ambiguous { .. }
                | RegistryError::NotAPlugin { .. }
        )
    }
}
