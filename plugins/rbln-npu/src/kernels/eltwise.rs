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

/// `out = act(x)`.
pub fn activation(kind: Activation, x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "activation: lengths");
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, i)| {
            for (y, &v) in o.iter_mut().zip(i) {
                *y = activate(kind, v);
            }
        });
}

/// `x = act(x)` in place (fused epilogues).
pub fn activation_inplace(kind: Activation, x: &mut [f32]) {
    x.par_chunks_mut(CHUNK).for_each(|c| {
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
