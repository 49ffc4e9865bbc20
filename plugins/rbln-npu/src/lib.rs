//! `rbln-npu`: an ahead-of-time compiler and runtime for the `plugin_api::graph` IR.
//!
//! **No NPU hardware is present here.** The compiler produces a versioned, checksummed artifact
//! (an execution plan with a static memory plan plus pre-packed weights), and the runtime
//! executes it on the host CPU cores with this crate's own kernels (cache-blocked GEMM,
//! im2col convolution, group norm, ...), parallelized with rayon.
//!
//! Pipeline: [`compiler::compile`] validates the graph, lowers it to a [`program::Program`],
//! runs [`compiler::passes::pipeline`] (re-validating after every pass) and writes an
//! [`artifact`]. [`NpuExecutable::load`] verifies it; [`NpuExecutable::run`] executes it over a
//! per-call arena, so one executable may be run from several threads at once.

pub mod artifact;
pub mod compiler;
pub mod device;
mod ffi;
pub mod inspect;
pub mod kernels;
mod plugin;
pub mod program;
pub mod runtime;

pub use ffi::{backend, compiler_box, device_box, get_root_module};
pub use plugin::{
    compile_and_run, compile_graph, NpuCompiler, NpuDevice, ARTIFACT_EXTENSION, DESCRIPTION, NAME,
};
pub use runtime::executable::NpuExecutable;

#[cfg(test)]
mod shapes_tests;
#[cfg(test)]
mod tests;
