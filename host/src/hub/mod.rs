//! The Hugging Face Hub: repository ids (`org/name`), the local cache in huggingface_hub's layout
//! ([`cache`]) and downloads from an endpoint's `/{repo}/resolve/{revision}/{path}` ([`remote`]),
//! put together as huggingface_hub's `hf_hub_download` does ([`fetch`]).
//!
//! It knows nothing of models or plugins: the models layer asks it for files by name.

pub mod cache;
pub mod fetch;
pub mod names;
pub mod remote;
pub mod settings;

pub use fetch::Hub;
pub use names::{is_commit_hash, RepoId};
pub use settings::Settings;

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
