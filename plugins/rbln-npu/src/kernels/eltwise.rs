//! Element-wise kernels: activations, add, scale. Parallel over fixed-size chunks.

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

#[inline(always)]
fn silu_slice_body(x: &[f32], out: &mut [f32]) {
    for (y, &v) in out.iter_mut().zip(x) {
        *y = silu_fast(v);
    }
}

#[inline(always)]
fn silu_inplace_body(x: &mut [f32]) {
    for v in x {
        *v = silu_fast(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_slice_avx2(x: &[f32], out: &mut [f32]) {
    silu_slice_body(x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_inplace_avx2(x: &mut [f32]) {
    silu_inplace_body(x)
}

/// Whether the AVX2+FMA versions may run on this CPU (detected once).
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out[i] = silu(x[i])` (vectorized with AVX2 when available).
pub fn silu_slice(x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "silu: lengths");
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { silu_slice_avx2(x, out) };
    }
    silu_slice_body(x, out)
}

/// `x[i] = silu(x[i])` (vectorized with AVX2 when available).
pub fn silu_inplace(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { silu_inplace_avx2(x) };
    }
    silu_inplace_body(x)
}

/// `out = act(x)`.
pub fn activation(kind: Activation, x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "activation: lengths");
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, i)| {
            if kind == Activation::Silu {
                return silu_slice(i, o);
            }
            for (y, &v) in o.iter_mut().zip(i) {
                *y = activate(kind, v);
            }
        });
}

/// `x = act(x)` in place (fused epilogues).
pub fn activation_inplace(kind: Activation, x: &mut [f32]) {
    x.par_chunks_mut(CHUNK).for_each(|c| {
        if kind == Activation::Silu {
            return silu_inplace(c);
        }
        for v in c {
            *v = activate(kind, *v);
        }
    });
}

/// `out = a + b`.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() == out.len() && b.len() == out.len(), "add: lengths");
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (x, y))| {
            for ((r, &p), &q) in o.iter_mut().zip(x).zip(y) {
                *r = p + q;
            }
        });
}

/// `out = x * factor`.
pub fn scale(x: &[f32], factor: f32, out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "scale: lengths");
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, i)| {
            for (r, &v) in o.iter_mut().zip(i) {
                *r = v * factor;
            }
        });
}
