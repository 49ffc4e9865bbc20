//! Host CPU kernels: the fast (blocked, parallel) versions used by the runtime and the plain
//! scalar [`reference`] versions they are tested against. The only module with `unsafe`.

pub mod attention;
pub mod conv;
pub mod eltwise;
pub mod gemm;
pub mod layout;
pub mod matmul;
pub mod norm;
pub mod reference;
pub mod winograd;

#[cfg(test)]
mod tests;
