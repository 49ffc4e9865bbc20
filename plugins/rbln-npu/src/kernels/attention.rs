//! Scaled dot-product attention computed a block of query rows at a time: for each block,
//! `S = q_blk k^T` (a `rows x M` slice, never the whole `N x M` matrix), a row softmax of
//! `scale * S` in place, then `out_blk = S v`. Both products run on the blocked GEMM.

use super::eltwise::exp_fast;
use super::gemm::{self, COut, RowMajorB, MR};
use rayon::prelude::*;

/// Query rows per block (a multiple of the GEMM panel height).
const ROWS: usize = 16 * MR;

/// `out[b] = softmax(scale * q[b] k[b]^T) v[b]` with `q: [B, N, D]`, `k: [B, M, D]`,
/// `v: [B, M, E]`, `out: [B, N, E]`.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    [b, n, m, d, e]: [usize; 5],
    scale: f32,
    out: &mut [f32],
) {
    assert_eq!(q.len(), b * n * d, "attention: q length");
    assert_eq!(k.len(), b * m * d, "attention: k length");
    assert_eq!(v.len(), b * m * e, "attention: v length");
    assert_eq!(out.len(), b * n * e, "attention: output length");
    if m == 0 || n == 0 || e == 0 {
        out.fill(0.0);
        return;
    }
    let mut kt = vec![0.0f32; d * m];
    let mut scores = vec![0.0f32; ROWS.min(n) * m];
    for bi in 0..b {
        // k^T as a row-major D x M matrix, so that the GEMM gathers contiguous rows.
        let kb = &k[bi * m * d..(bi + 1) * m * d];
        kt.par_chunks_mut(m).enumerate().for_each(|(c, row)| {
            for (j, t) in row.iter_mut().enumerate() {
                *t = kb[j * d + c];
            }
        });
        let vb = &v[bi * m * e..(bi + 1) * m * e];
        for r0 in (0..n).step_by(ROWS) {
            let rows = ROWS.min(n - r0);
            let qa = gemm::pack_a(&q[(bi * n + r0) * d..][..rows * d], rows, d);
            let s = &mut scores[..rows * m];
            let c = COut {
                data: s,
                rs: m,
                cs: 1,
            };
            gemm::gemm(rows, m, d, &qa, &RowMajorB { data: &kt, ld: m }, None, c);
            s.par_chunks_mut(m)
                .for_each(|row| softmax_scaled(row, scale));
            let pa = gemm::pack_a(s, rows, m);
            let c = COut {
                data: &mut out[(bi * n + r0) * e..][..rows * e],
                rs: e,
                cs: 1,
            };
            gemm::gemm(rows, e, m, &pa, &RowMajorB { data: vb, ld: e }, None, c);
        }
    }
}

/// `row = softmax(scale * row)` in place (max-subtracted, sum in f64).
fn softmax_scaled(row: &mut [f32], scale: f32) {
    let mut max = f32::NEG_INFINITY;
    for x in row.iter_mut() {
        *x *= scale;
        max = max.max(*x);
    }
    let mut sum = 0.0f64;
    for chunk in row.chunks_mut(256) {
        let mut part = 0.0f32;
        for x in chunk.iter_mut() {
            *x = exp_fast(*x - max);
            part += *x;
        }
        sum += part as f64;
    }
    let inv = (1.0 / sum) as f32;
    for x in row.iter_mut() {
        *x *= inv;
    }
}
