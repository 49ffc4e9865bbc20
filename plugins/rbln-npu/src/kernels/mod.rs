//! Host CPU kernels: the fast (blocked, parallel) versions used by the runtime, the plain
//! scalar [`reference`] versions they are tested against, and the large [`buffers`] they run
//! on. The only module with `unsafe`.

pub mod attention;
pub mod bf16;
pub mod buffers;
pub mod conv;
pub mod eltwise;
pub mod gemm;
pub mod isa;
pub mod layout;
pub mod matmul;
pub mod norm;
pub mod reference;
pub mod winograd;

/// A raw pointer to an output buffer that parallel tasks write through. Each user guarantees
/// (and says at its write) that no two tasks write the same element.
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: sharing the pointer is sound because users only write disjoint elements through it.
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

#[cfg(test)]
mod tests;
