//! The Hub's error: its kind and a message naming what was looked for.

/// What kind of failure a [`HubError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubErrorKind {
    /// A malformed id, revision, path or setting.
    Invalid,
    /// The repository, revision or file does not exist (or is not cached, offline).
    NotFound,
    /// No endpoint answered and the cache does not hold the file: retry later.
    Unavailable,
    /// Writing the cache failed.
    Io,
}

/// A Hub error: what was looked for and why it was not found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HubError {
    /// The kind.
    pub kind: HubErrorKind,
    /// What went wrong, naming the id, revision and file.
    pub message: String,
}

impl HubError {
    /// An error of `kind`.
    pub fn new(kind: HubErrorKind, message: impl Into<String>) -> HubError {
        HubError {
            kind,
            message: message.into(),
        }
    }

    /// A malformed input.
    pub fn invalid(message: impl Into<String>) -> HubError {
        HubError::new(HubErrorKind::Invalid, message)
    }

    /// A failed cache write or read.
    pub fn io(what: impl std::fmt::Display, path: &std::path::Path, e: std::io::Error) -> HubError {
        HubError::new(HubErrorKind::Io, format!("{what} {}: {e}", path.display()))
    }
}
