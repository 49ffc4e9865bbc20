//! The error kinds every boundary maps from: the CLI to exit codes (`cli::exit_code`), the
//! server to HTTP statuses (`serve::error`), the Triton backend to `TRITONSERVER_Error` codes.
//! Each library error of the host says which kind it is here, once ([`kind_of`]); the modules
//! that define those errors (`io`, `hub`, `plugins`, `manifest`, `pipeline`) do not import this one.

use crate::hub::{HubError, HubErrorKind};
use crate::io::IoError;
use crate::manifest::ManifestError;
use crate::pipeline::exec::RunError;
use crate::plugins::RegistryError;
use anyhow::Context;
use plugin_api::{PluginError, PluginResult};
use std::path::Path;

/// What kind of failure an error is, independent of where it is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's input is wrong (argument, file, request, config value).
    Invalid,
    /// Something the caller named does not exist (file, model, method, plugin).
    NotFound,
    /// Valid, but not supported by the loaded plugins.
    Unsupported,
    /// Valid, but it cannot be taken now (a full queue, a server shutting down): retry later.
    Unavailable,
    /// A run exceeded its time limit (a model's `timeout`) and was stopped.
    Timeout,
    /// A failure inside the host or a plugin; not the caller's fault.
    Internal,
}

impl ErrorKind {
    /// True when the caller is at fault (the CLI exits with 2, the server answers 4xx).
    pub fn is_user_error(self) -> bool {
        matches!(self, ErrorKind::Invalid | ErrorKind::NotFound)
    }
}

impl From<plugin_api::ErrorKind> for ErrorKind {
    fn from(k: plugin_api::ErrorKind) -> Self {
        match k {
            plugin_api::ErrorKind::InvalidArgument => ErrorKind::Invalid,
            plugin_api::ErrorKind::NotFound => ErrorKind::NotFound,
            plugin_api::ErrorKind::Unsupported => ErrorKind::Unsupported,
            plugin_api::ErrorKind::Internal => ErrorKind::Internal,
        }
    }
}

/// A host-side input error (bad argument, missing file): [`ErrorKind::Invalid`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An error with its kind, for failures that are neither a plugin's nor a file's (e.g. a model
/// returning outputs that do not match its signature).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KindError {
    /// The kind.
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
}

impl KindError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        KindError {
            kind,
            message: message.into(),
        }
    }
}

impl From<PluginError> for KindError {
    fn from(e: PluginError) -> Self {
        KindError::new(plugin_kind(&e), e.to_string())
    }
}

/// The kind of a plugin's error: its [`plugin_api::ErrorKind`], except that a
/// [`PluginError::timeout`] is [`ErrorKind::Timeout`].
pub fn plugin_kind(e: &PluginError) -> ErrorKind {
    if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        e.kind.into()
    }
}

/// The kind of `err`: that of the first error in its chain that has one; else internal.
pub fn kind_of(err: &anyhow::Error) -> ErrorKind {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<PluginError>() {
            return plugin_kind(e);
        }
        if let Some(e) = cause.downcast_ref::<KindError>() {
            return e.kind;
        }
        if let Some(e) = cause.downcast_ref::<RegistryError>() {
            return user_or_internal(e.is_user_error());
        }
        if let Some(e) = cause.downcast_ref::<HubError>() {
            return match e.kind {
                HubErrorKind::Invalid => ErrorKind::Invalid,
                HubErrorKind::NotFound => ErrorKind::NotFound,
                HubErrorKind::Unavailable => ErrorKind::Unavailable,
                HubErrorKind::Io => ErrorKind::Internal,
            };
        }
        if let Some(e) = cause.downcast_ref::<IoError>() {
            return user_or_internal(e.is_user_error());
        }
        if let Some(e) = cause.downcast_ref::<RunError>() {
            if e.is_unavailable() {
                return ErrorKind::Unavailable;
            }
            return user_or_internal(e.is_user_error());
        }
        if cause.downcast_ref::<UsageError>().is_some()
            || cause.downcast_ref::<ManifestError>().is_some()
        {
            return ErrorKind::Invalid;
        }
    }
    ErrorKind::Internal
}

fn user_or_internal(user: bool) -> ErrorKind {
    if user {
        ErrorKind::Invalid
    } else {
        ErrorKind::Internal
    }
}

/// Converts a plugin result into an anyhow result, keeping the [`PluginError`] in the chain.
pub fn plugin<T>(r: PluginResult<T>) -> anyhow::Result<T> {
    r.into_result().map_err(anyhow::Error::from)
}

/// Fails with a [`UsageError`] unless `dir` is an existing directory.
pub fn require_dir(dir: &Path, what: &str) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let why = if dir.exists() {
        "is not a directory"
    } else {
        "does not exist"
    };
    Err(UsageError(format!("{what} {} {why}", dir.display())).into())
}

/// A path as the `&str` plugins take.
pub fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .ok_or_else(|| UsageError(format!("path {} is not valid UTF-8", path.display())))
        .context("plugins take UTF-8 paths")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_first_classified_cause() {
        let e = anyhow::Error::from(PluginError::invalid("bad shape")).context("running encode");
        assert_eq!(kind_of(&e), ErrorKind::Invalid);
        let e = anyhow::Error::from(PluginError::not_found("no file"));
        assert_eq!(kind_of(&e), ErrorKind::NotFound);
        let e = anyhow::Error::from(KindError::new(ErrorKind::Unsupported, "x")).context("y");
        assert_eq!(kind_of(&e), ErrorKind::Unsupported);
        assert_eq!(kind_of(&anyhow::anyhow!("other")), ErrorKind::Internal);
        let e = anyhow::Error::from(PluginError::timeout("decoder exceeded 1 s").context("decode"));
        assert_eq!(kind_of(&e), ErrorKind::Timeout);
        assert!(!ErrorKind::Timeout.is_user_error());
    }
}
