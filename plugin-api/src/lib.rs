//! The stable ABI between the `mlhost` serving host and its plugins.
//!
//! A plugin is a `cdylib` that exports one [`PluginRootRef`] (via
//! `#[abi_stable::export_root_module]`). Through it the host obtains:
//!
//! * [`ModelClassBox`]es: model families (e.g. `RBLNAutoencoderKL`) that turn a checkpoint
//!   into a graph, compile it with a [`CompilerBox`] and run it on a [`DeviceBox`];
//! * [`CompilerBox`]es: ahead-of-time compilers from the [`graph`] IR to a serialized artifact;
//! * [`DeviceBox`]es: runtimes that load an artifact into an [`ExecutableBox`] and run it.
//!
//! Every trait is synchronous. A plugin must never let a panic unwind across the boundary: wrap
//! each exported entry point in [`guard`], which turns a panic into an [`ErrorKind::Internal`]
//! error. Only the types of this crate cross the boundary; everything else stays plain Rust.
//!
//! Versioning: the root module carries this crate's version ([`ABI_VERSION`]); the host refuses a
//! plugin whose major version (or, for `0.y`, minor version) differs. The graph IR has its own
//! [`graph::IR_VERSION`], checked whenever a graph crosses the boundary.

pub mod dir;
pub mod error;
pub mod graph;
pub mod guard;
pub mod root;
pub mod tensor;
pub mod traits;

pub use error::{ErrorKind, PluginError, PluginResult};
pub use guard::guard;
pub use root::{PluginInfo, PluginRoot, PluginRootRef, ABI_VERSION};
pub use tensor::{DType, NamedTensor, Tensor, TensorSpec};
pub use traits::*;

/// Re-exported so that plugins and the host use the exact same abi_stable.
pub use abi_stable;
