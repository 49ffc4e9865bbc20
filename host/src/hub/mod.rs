//! The Hugging Face Hub: repository ids (`org/name`), the local cache in huggingface_hub's layout
//! ([`cache`]) and downloads from an endpoint's `/{repo}/resolve/{revision}/{path}` ([`remote`]),
//! put together as huggingface_hub's `hf_hub_download` does ([`fetch`]).
//!
//! It knows nothing of models or plugins: the models layer asks it for files by name.

pub mod cache;
pub mod error;
pub mod fetch;
pub mod names;
pub mod remote;
pub mod settings;

pub use error::{HubError, HubErrorKind};
pub use fetch::Hub;
pub use names::{is_commit_hash, RepoId};
pub use settings::Settings;
