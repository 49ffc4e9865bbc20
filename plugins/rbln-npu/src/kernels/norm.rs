//! Group normalization: statistics in f64 with two passes (mean, then centered variance).

use super::eltwise::activate;
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
            let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / glen as f64;
            let var = xs
                .iter()
                .map(|&v| {
                    let d = v as f64 - mean;
                    d * d
                })
                .sum::<f64>()
                / glen as f64;
            let inv_std = 1.0 / (var + eps as f64).sqrt();
            for ci in 0..cpg {
                let ch = g * cpg + ci;
                let (a, b, m) = ((gamma[ch] as f64 * inv_std) as f32, beta[ch], mean as f32);
                let (oc, xc) = (&mut o[ci * s..(ci + 1) * s], &xs[ci * s..(ci + 1) * s]);
                match act {
                    None => oc
                        .iter_mut()
                        .zip(xc)
                        .for_each(|(y, &v)| *y = (v - m) * a + b),
                    Some(k) => oc
                        .iter_mut()
                        .zip(xc)
                        .for_each(|(y, &v)| *y = activate(k, (v - m) * a + b)),
                }
            }
        });
}
