//! Group normalization: two passes (mean, then centered variance), summed in f32 lanes over
//! blocks of [`BLOCK`] values and across blocks in f64; the normalization, affine and fused SiLU
//! run vectorized.

use super::eltwise::{activate, map_into, silu_fast};
use super::isa::{self, Isa};
use plugin_api::graph::Activation;
use rayon::prelude::*;

/// Normalizes `x: [N, C, S]` (S = product of spatial dims) over groups of `C / groups`
/// channels, then applies per-channel `gamma`, `beta` and the optional fused activation.
pub fn group_norm(
    x: &[f32],
    n: usize,
    c: usize,
    s: usize,
    groups: usize,
    eps: f32,
    gamma: &[f32],
    beta: &[f32],
    act: Option<Activation>,
    out: &mut [f32],
) {
    assert_eq!(x.len(), out.len(), "group_norm: lengths");
    group_norm_into(Some(x), [n, c, s], groups, eps, (gamma, beta), act, out)
}

/// [`group_norm`] in place: `x` is overwritten with its normalization. Each group's statistics
/// are computed before the group is written, and groups are disjoint, so the result is the
/// same.
pub fn group_norm_inplace(
    x: &mut [f32],
    n: usize,
    c: usize,
    s: usize,
    groups: usize,
    eps: f32,
    gamma: &[f32],
    beta: &[f32],
    act: Option<Activation>,
) {
    group_norm_into(None, [n, c, s], groups, eps, (gamma, beta), act, x)
}

/// [`group_norm`] of `x`, or of `out` itself when `x` is `None`, into `out`.
fn group_norm_into(
    x: Option<&[f32]>,
    [n, c, s]: [usize; 3],
    groups: usize,
    eps: f32,
    (gamma, beta): (&[f32], &[f32]),
    act: Option<Activation>,
    out: &mut [f32],
) {
    assert!(
        groups > 0 && c.is_multiple_of(groups),
        "group_norm: groups must divide channels"
    );
    assert_eq!(out.len(), n * c * s, "group_norm: lengths");
    assert!(
        gamma.len() == c && beta.len() == c,
        "group_norm: affine lengths"
    );
    let cpg = c / groups;
    let glen = cpg * s;
    if glen == 0 {
        return;
    }
    let path = isa::path();
    out.par_chunks_mut(glen).enumerate().for_each(|(idx, o)| {
        let g = idx % groups;
        let xs = x.map(|x| &x[idx * glen..(idx + 1) * glen]);
        let affine = (
            &gamma[g * cpg..(g + 1) * cpg],
            &beta[g * cpg..(g + 1) * cpg],
        );
        match path.isa() {
            // SAFETY (both): a path exists only if the CPU has its features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { group_avx512(xs, s, eps, affine, act, o) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { group_avx2(xs, s, eps, affine, act, o) },
            _ => group_body(xs, s, eps, affine, act, o),
        }
    });
}

/// Values summed in f32 lanes before the running total (in f64) takes them.
const BLOCK: usize = 512;
/// f32 accumulators per block (independent chains that vectorize).
const LANES: usize = 16;

/// `sum(f(v))` over `xs`: f32 lane sums per block, blocks added in f64.
#[inline(always)]
fn blocked_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0.0f64;
    for block in xs.chunks(BLOCK) {
        let mut acc = [0.0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                acc[l] += f(c[l]);
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
        total += acc.iter().map(|&a| a as f64).sum::<f64>() + tail as f64;
    }
    total
}

/// One group: `xs` (or `o` itself, in place, when `xs` is `None`) holds `gamma.len()` channels
/// of `s` values each.
#[inline(always)]
fn group_body(
    xs: Option<&[f32]>,
    s: usize,
    eps: f32,
    (gamma, beta): (&[f32], &[f32]),
    act: Option<Activation>,
    o: &mut [f32],
) {
    let stats = xs.unwrap_or(&*o);
    let n = stats.len() as f64;
    let mean = blocked_sum(stats, |v| v) / n;
    let m32 = mean as f32;
    // Centered second pass; the f32 rounding of the mean is corrected by the first moment.
    let d1 = blocked_sum(stats, |v| v - m32) / n;
    let var = (blocked_sum(stats, |v| (v - m32) * (v - m32)) / n - d1 * d1).max(0.0);
    let inv_std = 1.0 / (var + eps as f64).sqrt();
    for (ci, (&gm, &bt)) in gamma.iter().zip(beta).enumerate() {
        let (a, b) = ((gm as f64 * inv_std) as f32, bt);
        let oc = &mut o[ci * s..(ci + 1) * s];
        let xc = xs.map(|x| &x[ci * s..(ci + 1) * s]);
        match act {
            None => map_into(xc, oc, |v| (v - m32) * a + b),
            Some(Activation::Silu) => map_into(xc, oc, |v| silu_fast((v - m32) * a + b)),
            Some(k) => map_into(xc, oc, |v| activate(k, (v - m32) * a + b)),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_avx2(
    xs: Option<&[f32]>,
    s: usize,
    eps: f32,
    affine: (&[f32], &[f32]),
    act: Option<Activation>,
    o: &mut [f32],
) {
    group_body(xs, s, eps, affine, act, o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn group_avx512(
    xs: Option<&[f32]>,
    s: usize,
    eps: f32,
    affine: (&[f32], &[f32]),
    act: Option<Activation>,
    o: &mut [f32],
) {
    group_body(xs, s, eps, affine, act, o)
}
