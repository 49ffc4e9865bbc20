//! Linear layers, batched matrix products and softmax (the attention building blocks).

use super::gemm::{self, COut, RowMajorB, TransposedB};
use rayon::prelude::*;

/// `out[r, o] = sum_k x[r, k] * w[o, k] + b[o]` with `w` (`n_out x k`) packed by
/// [`gemm::pack_a`]. `x` is `rows x k`, `out` is `rows x n_out`.
pub fn linear_packed(
    x: &[f32],
    rows: usize,
    k: usize,
    w_packed: &[f32],
    n_out: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    assert_eq!(x.len(), rows * k, "linear: input length");
    assert_eq!(out.len(), rows * n_out, "linear: output length");
    // out^T = W x^T: the weight is the packed A operand, x^T the B operand.
    let src = TransposedB { data: x, ld: k };
    let c = COut {
        data: out,
        rs: 1,
        cs: n_out,
    };
    gemm::gemm(n_out, rows, k, w_packed, &src, bias, c);
}

/// [`linear_packed`] with a plain row-major `[n_out, k]` weight.
pub fn linear(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    n_out: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let packed = gemm::pack_a(w, n_out, k);
    linear_packed(x, rows, k, &packed, n_out, bias, out);
}

/// Batched `out[b] = a[b] x b[b]` (or `a[b] x b[b]^T` when `transpose_b`), `a[b]`: `m x k`,
/// `b[b]`: `k x n` (or `n x k`), `out[b]`: `m x n`.
pub fn matmul(
    a: &[f32],
    b: &[f32],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    transpose_b: bool,
    out: &mut [f32],
) {
    assert_eq!(a.len(), batch * m * k, "matmul: a length");
    assert_eq!(b.len(), batch * k * n, "matmul: b length");
    assert_eq!(out.len(), batch * m * n, "matmul: output length");
    for i in 0..batch {
        let a_packed = gemm::pack_a(&a[i * m * k..(i + 1) * m * k], m, k);
        let bm = &b[i * k * n..(i + 1) * k * n];
        let c = COut {
            data: &mut out[i * m * n..(i + 1) * m * n],
            rs: n,
            cs: 1,
        };
        if transpose_b {
            gemm::gemm(
                m,
                n,
                k,
                &a_packed,
                &TransposedB { data: bm, ld: k },
                None,
                c,
            );
        } else {
            gemm::gemm(m, n, k, &a_packed, &RowMajorB { data: bm, ld: n }, None, c);
        }
    }
}

/// Softmax over rows of length `d` (max-subtracted, sums in f64).
pub fn softmax(x: &[f32], d: usize, out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "softmax: lengths");
    if d == 0 {
        return;
    }
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(o, r)| softmax_row(r, o));
}

pub(crate) fn softmax_row(r: &[f32], o: &mut [f32]) {
    let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for (y, &v) in o.iter_mut().zip(r) {
        *y = (v - max).exp();
        sum += *y as f64;
    }
    let inv = (1.0 / sum) as f32;
    for y in o.iter_mut() {
        *y *= inv;
    }
}
