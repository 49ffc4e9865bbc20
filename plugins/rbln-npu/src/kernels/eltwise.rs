//! Element-wise kernels: activations, add, scale. Parallel over fixed-size chunks.

use super::isa::{self, Isa, Path};
use plugin_api::graph::Activation;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// `erf(x)` to about 1e-15: Maclaurin series below 3, continued fraction of `erfc` above.
pub fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 3.0 {
        let x2 = ax * ax;
        let (mut term, mut sum) = (ax, ax);
        for n in 1..200 {
            term *= -x2 / n as f64;
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-17 {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if ax < 7.0 {
        let mut t = ax;
        for n in (1..=80).rev() {
            t = ax + (n as f64 / 2.0) / t;
        }
        1.0 - (-ax * ax).exp() / (std::f64::consts::PI.sqrt() * t)
    } else {
        1.0
    };
    r.copysign(x)
}

/// One activation applied to one value.
#[inline]
pub fn activate(kind: Activation, x: f32) -> f32 {
    match kind {
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::Relu => x.max(0.0),
        Activation::Gelu => {
            let xd = x as f64;
            (0.5 * xd * (1.0 + erf(xd * std::f64::consts::FRAC_1_SQRT_2))) as f32
        }
        Activation::Mish => {
            let xd = x as f64;
            let softplus = if xd > 20.0 { xd } else { xd.exp().ln_1p() };
            (xd * softplus.tanh()) as f32
        }
    }
}

/// `e^x` for `x` in about `[-87, 88]` (clamped outside), within ~2 ulp of the exact value:
/// `2^n * p(r)` with `x = n ln 2 + r`, `|r| <= ln 2 / 2` and a degree-6 Taylor polynomial
/// `p`. Written branch-free so that loops over it vectorize.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer (|x log2 e| < 2^22).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits((((n as i32) + 127) as u32) << 23);
    p * scale
}

/// `x * sigmoid(x)` with [`exp_fast`].
#[inline(always)]
pub fn silu_fast(x: f32) -> f32 {
    x / (1.0 + exp_fast(-x))
}

/// `out[i] = f(x[i])`, or `out[i] = f(out[i])` in place when `x` is `None`.
#[inline(always)]
pub(crate) fn map_into(x: Option<&[f32]>, out: &mut [f32], f: impl Fn(f32) -> f32) {
    match x {
        Some(x) => out.iter_mut().zip(x).for_each(|(y, &v)| *y = f(v)),
        None => out.iter_mut().for_each(|y| *y = f(*y)),
    }
}

/// Runs `body(at, x, out)` in parallel over the [`CHUNK`]-float pieces of `out` starting at
/// `at`, with the matching piece of `x` (if any).
fn par_chunks(
    x: Option<&[f32]>,
    out: &mut [f32],
    body: impl Fn(usize, Option<&[f32]>, &mut [f32]) + Sync + Send,
) {
    if let Some(x) = x {
        assert_eq!(x.len(), out.len(), "element-wise: lengths");
    }
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, o)| {
        let at = i * CHUNK;
        body(at, x.map(|x| &x[at..at + o.len()]), o)
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_avx2(x: Option<&[f32]>, out: &mut [f32]) {
    map_into(x, out, silu_fast)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn silu_avx512(x: Option<&[f32]>, out: &mut [f32]) {
    map_into(x, out, silu_fast)
}

/// [`silu_fast`] over `x` (or in place over `out`), vectorized for `path`.
fn silu_into(path: Path, x: Option<&[f32]>, out: &mut [f32]) {
    match path.isa() {
        // SAFETY (both): a path exists only if the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { silu_avx512(x, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { silu_avx2(x, out) },
        _ => map_into(x, out, silu_fast),
    }
}

/// `out = act(x)`, or `out = act(out)` when `x` is `None`.
fn activation_into(kind: Activation, x: Option<&[f32]>, out: &mut [f32]) {
    let path = isa::path();
    par_chunks(x, out, |_, i, o| {
        if kind == Activation::Silu {
            return silu_into(path, i, o);
        }
        map_into(i, o, |v| activate(kind, v))
    });
}

/// `out = act(x)`.
pub fn activation(kind: Activation, x: &[f32], out: &mut [f32]) {
    activation_into(kind, Some(x), out)
}

/// `x = act(x)` in place (fused epilogues, in-place steps).
pub fn activation_inplace(kind: Activation, x: &mut [f32]) {
    activation_into(kind, None, x)
}

/// `out = a + b`, or `out += b` when `a` is `None`.
fn add_into(a: Option<&[f32]>, b: &[f32], out: &mut [f32]) {
    assert_eq!(b.len(), out.len(), "add: lengths");
    par_chunks(a, out, |at, x, o| {
        let y = &b[at..at + o.len()];
        match x {
            Some(x) => o
                .iter_mut()
                .zip(x)
                .zip(y)
                .for_each(|((r, &p), &q)| *r = p + q),
            None => o.iter_mut().zip(y).for_each(|(r, &q)| *r += q),
        }
    });
}

/// `out = a + b`.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    add_into(Some(a), b, out)
}

/// `acc += b` (an add whose other operand's memory it overwrites; addition commutes exactly, so
/// this equals [`add`] with the operands in either order).
pub fn add_inplace(acc: &mut [f32], b: &[f32]) {
    add_into(None, b, acc)
}

/// `out = x * factor`, or `out *= factor` when `x` is `None`.
fn scale_into(x: Option<&[f32]>, factor: f32, out: &mut [f32]) {
    par_chunks(x, out, |_, i, o| map_into(i, o, |v| v * factor));
}

/// `out = x * factor`.
pub fn scale(x: &[f32], factor: f32, out: &mut [f32]) {
    scale_into(Some(x), factor, out)
}

/// `x *= factor` in place.
pub fn scale_inplace(x: &mut [f32], factor: f32) {
    scale_into(None, factor, x)
}
