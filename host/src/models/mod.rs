//! The model layer: everything between a plugin registry and a model that can answer calls.
//! `cli`, `serve`, the pipeline runner and the Triton backend load and run models only through
//! it.
//!
//! - [`resolve`]: which plugin files a manifest asks for; which class, compiler and device.
//! - [`load`]: `from_pretrained` with the one precedence of configuration (see [`load::Overrides`]).
//! - [`signature`]: a served method's [`MethodSig`].
//! - [`describe`]: what the host needs of a model directory, asked of its plugin.
//! - [`batch`]: warm-up and the execution of one full batch with its output checks.
//! - [`manifest`]: a manifest opened: its plugins loaded, its pipelines resolved.
//! - [`served`]: a loaded, warmed-up manifest or repository model.
//! - [`pipeline`]: the loaded models a pipeline's steps call.

pub mod batch;
pub mod describe;
pub mod load;
pub mod manifest;
pub mod pipeline;
pub mod resolve;
pub mod served;
pub mod signature;

pub use batch::{run_batch, warm_up};
pub use load::{open, LoadSpec, Overrides};
pub use resolve::Choice;
pub use signature::MethodSig;
