//! Scaled dot-product attention computed a block of query rows at a time, never holding the
//! whole `N x M` score matrix. Keys and values are packed once per call as GEMM `A` operands
//! (`k` as is, `v` transposed); then each block of queries, in parallel, computes
//! `S^T = k q_blk^T` (an `M x rows` product whose results land as `rows` score rows), a row
//! softmax of `scale * S` in place, and `out_blk^T = v^T S^T`, with single-threaded GEMMs.

use super::eltwise::exp_fast;
use super::gemm::{self, COut, TransposedB, NR};
use super::isa::{self, Isa, Path};
use super::SharedOut;
use rayon::prelude::*;
use std::cell::RefCell;

/// Query rows per block (a multiple of the GEMM panel width).
const ROWS: usize = 4 * NR;

thread_local! {
    /// Each worker's score rows, kept between calls (grow-only).
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

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
    for bi in 0..b {
        let ka = gemm::pack_a(&k[bi * m * d..(bi + 1) * m * d], m, d);
        let va = gemm::pack_a_transposed(&v[bi * m * e..(bi + 1) * m * e], e, m);
        let qb = &q[bi * n * d..(bi + 1) * n * d];
        let ob = &mut out[bi * n * e..(bi + 1) * n * e];
        let shared = SharedOut(ob.as_mut_ptr());
        let shared = &shared;
        let path = isa::path();
        (0..n.div_ceil(ROWS)).into_par_iter().for_each(|blk| {
            let r0 = blk * ROWS;
            let rows = ROWS.min(n - r0);
            // The GEMMs run on this worker thread: on the caller's path.
            isa::with_path(path, || {
                SCORES.with(|cell| {
                    let mut scores = cell.borrow_mut();
                    if scores.len() < ROWS * m {
                        scores.resize(ROWS * m, 0.0);
                    }
                    let s = &mut scores[..rows * m];
                    // S^T (M x rows) stored as score rows: element (j, r) at r * m + j.
                    let st = COut {
                        data: s,
                        rs: 1,
                        cs: m,
                    };
                    let qt = TransposedB {
                        data: &qb[r0 * d..(r0 + rows) * d],
                        ld: d,
                    };
                    gemm::gemm_serial(m, rows, d, &ka, &qt, None, st);
                    for row in s.chunks_mut(m) {
                        softmax_scaled(path, row, scale);
                    }
                    // SAFETY: rows r0 .. r0 + rows of this batch's output belong to this block
                    // only; the range is inside `ob`.
                    let o =
                        unsafe { std::slice::from_raw_parts_mut(shared.0.add(r0 * e), rows * e) };
                    let ot = COut {
                        data: o,
                        rs: 1,
                        cs: e,
                    };
                    let p = TransposedB { data: s, ld: m };
                    gemm::gemm_serial(e, rows, m, &va, &p, None, ot);
                })
            })
        });
    }
}

/// `row = softmax(scale * row)` in place, vectorized for `path`.
fn softmax_scaled(path: Path, row: &mut [f32], scale: f32) {
    match path.isa() {
        // SAFETY (both): a path exists only if the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { softmax_avx512(row, scale) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { softmax_avx2(row, scale) },
        _ => softmax_body(row, scale),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(row: &mut [f32], scale: f32) {
    softmax_body(row, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_avx512(row: &mut [f32], scale: f32) {
    softmax_body(row, scale)
}

/// `row = softmax(scale * row)` in place (max-subtracted, sum in f64).
#[inline(always)]
fn softmax_body(row: &mut [f32], scale: f32) {
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
