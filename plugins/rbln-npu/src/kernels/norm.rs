//! Group normalization: two passes (mean, then centered variance), summed in f32 lanes over
//! blocks of [`BLOCK`] values and across blocks in f64; the normalization, affine and fused SiLU
//! run vectorized.

use super::eltwise::{activate, has_avx2_fma, silu_fast};
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
    assert!(
        groups > 0 && c.is_multiple_of(groups),
        "group_norm: groups must divide channels"
    );
    assert!(
        x.len() == n * c * s && out.len() == x.len(),
        "group_norm: lengths"
    );
    assert!(
        gamma.len() == c && beta.len() == c,
        "group_norm: affine lengths"
    );
    let cpg = c / groups;
    let glen = cpg * s;
    if glen == 0 {
        return;
    }
    out.par_chunks_mut(glen)
        .zip(x.par_chunks(glen))
        .enumerate()
        .for_each(|(idx, (o, xs))| {
            let g = idx % groups;
            let affine = (
                &gamma[g * cpg..(g + 1) * cpg],
                &beta[g * cpg..(g + 1) * cpg],
            );
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: AVX2 and FMA were detected at run time.
                return unsafe { group_avx2(xs, s, eps, affine, act, o) };
            }
            group_body(xs, s, eps, affine, act, o)
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

/// One group: `xs` holds `gamma.len()` channels of `s` values each.
#[inline(always)]
fn group_body(
    xs: &[f32],
    s: usize,
    eps: f32,
    (gamma, beta): (&[f32], &[f32]),
    act: Option<Activation>,
    o: &mut [f32],
) {
    let n = xs.len() as f64;
    let mean = blocked_sum(xs, |v| v) / n;
    let m32 = mean as f32;
    // Centered second pass; the f32 rounding of the mean is corrected by the first moment.
    let d1 = blocked_sum(xs, |v| v - m32) / n;
    let var = (blocked_sum(xs, |v| (v - m32) * (v - m32)) / n - d1 * d1).max(0.0);
    let inv_std = 1.0 / (var + eps as f64).sqrt();
    for (ci, (&gm, &bt)) in gamma.iter().zip(beta).enumerate() {
        let (a, b) = ((gm as f64 * inv_std) as f32, bt);
        let (oc, xc) = (&mut o[ci * s..(ci + 1) * s], &xs[ci * s..(ci + 1) * s]);
        match act {
            None => oc
                .iter_mut()
                .zip(xc)
                .for_each(|(y, &v)| *y = (v - m32) * a + b),
            Some(Activation::Silu) => oc
                .iter_mut()
                .zip(xc)
                .for_each(|(y, &v)| *y = silu_fast((v - m32) * a + b)),
            Some(k) => oc
                .iter_mut()
                .zip(xc)
                .for_each(|(y, &v)| *y = activate(k, (v - m32) * a + b)),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_avx2(
    xs: &[f32],
    s: usize,
    eps: f32,
    affine: (&[f32], &[f32]),
    act: Option<Activation>,
    o: &mut [f32],
) {
    group_body(xs, s, eps, affine, act, o)
}
