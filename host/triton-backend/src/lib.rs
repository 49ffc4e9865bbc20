//! `libtriton_rbln.so`: an NVIDIA Triton Inference Server backend that serves one method
//! (`encode` or `decode`) of an mlhost model per Triton model, loading the model through the
//! mlhost plugins (the same plugin loading, class choice and `from_pretrained` path as
//! `mlhost run`).
//!
//! The Triton entry points (`TRITONBACKEND_*` in [`ffi`]) are thin: they turn Triton handles
//! into plain Rust values, call the logic in [`config`], [`batch`] and [`model`], and turn every
//! error and every panic into a `TRITONSERVER_Error`. Nothing unwinds into Triton.
//!
//! The `TRITONSERVER_*` / `TRITONBACKEND_*` functions we call are declared in `sys` and resolve
//! from the server at load time, so the FFI part is left out of unit-test builds (which have no
//! server to link against); everything it relies on is tested here without Triton.

pub mod batch;
pub mod config;
pub mod model;

#[cfg(not(test))]
mod execute;
#[cfg(not(test))]
mod ffi;
#[cfg(not(test))]
mod sys;
#[cfg(not(test))]
mod triton;

/// The TRITONBACKEND API version this backend was written against (Triton 24.10 / 2.51).
pub mod version {
    /// Major version: a server with another major is refused.
    pub const MAJOR: u32 = 1;
    /// Minor version: a server with an older minor is refused.
    pub const MINOR: u32 = 19;
}
