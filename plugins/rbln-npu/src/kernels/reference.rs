//! Plain scalar reference versions of every kernel: simple loops, f64 accumulation, no
//! blocking and no threads. The fast kernels are tested against these, and the end-to-end
//! tests evaluate whole graphs with them.

use super::conv::ConvGeom;
use super::eltwise::activate;
use plugin_api::graph::Activation;

/// Direct convolution with `w: [C_out, C_in, KH, KW]`.
pub fn conv2d(g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let [n, c, h, wd] = g.input;
    let [_, co, oh, ow] = g.output();
    let [kh, kw] = g.kernel;
    let mut out = vec![0.0; n * co * oh * ow];
    for b in 0..n {
        for o in 0..co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |b| b[o] as f64);
                    for ci in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * g.stride[0] + ky) as isize - g.padding[0] as isize;
                                let ix = (ox * g.stride[1] + kx) as isize - g.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd {
                                    continue;
                                }
                                let xv = x[((b * c + ci) * h + iy as usize) * wd + ix as usize];
                                let wv = w[((o * c + ci) * kh + ky) * kw + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out[((b * co + o) * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
    }
    out
}

/// Group norm of `x: [N, C, S]`, optionally followed by an activation.
pub fn group_norm(
    x: &[f32],
    [n, c, s]: [usize; 3],
    groups: usize,
    eps: f32,
    gamma: &[f32],
    beta: &[f32],
    act: Option<Activation>,
) -> Vec<f32> {
    let cpg = c / groups;
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for g in 0..groups {
            let range = (b * c + g * cpg) * s..(b * c + (g + 1) * cpg) * s;
            let cnt = range.len() as f64;
            let mean = x[range.clone()].iter().map(|&v| v as f64).sum::<f64>() / cnt;
            let var = x[range.clone()]
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / cnt;
            for i in range {
                let ch = i / s % c;
                let y = (x[i] as f64 - mean) / (var + eps as f64).sqrt() * gamma[ch] as f64
                    + beta[ch] as f64;
                out[i] = match act {
                    Some(k) => activate(k, y as f32),
                    None => y as f32,
                };
            }
        }
    }
    out
}

/// Element-wise activation.
pub fn activation(kind: Activation, x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| activate(kind, v)).collect()
}

/// `a + b`.
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// `x * f`.
pub fn scale(x: &[f32], f: f32) -> Vec<f32> {
    x.iter().map(|v| v * f).collect()
}

/// Nearest 2x upsampling of `planes` planes of `h x w`.
pub fn upsample_nearest_2x(x: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0.0; 4 * planes * h * w];
    for p in 0..planes {
        for y in 0..2 * h {
            for xx in 0..2 * w {
                out[(p * 2 * h + y) * 2 * w + xx] = x[(p * h + y / 2) * w + xx / 2];
            }
        }
    }
    out
}

/// `x[rows, k] @ w[n, k]^T + b`.
pub fn linear(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    n: usize,
    b: Option<&[f32]>,
) -> Vec<f32> {
    let mut out = vec![0.0; rows * n];
    for r in 0..rows {
        for o in 0..n {
            let mut acc = b.map_or(0.0, |b| b[o] as f64);
            for i in 0..k {
                acc += x[r * k + i] as f64 * w[o * k + i] as f64;
            }
            out[r * n + o] = acc as f32;
        }
    }
    out
}

/// Batched `a @ b` or `a @ b^T`.
pub fn matmul(a: &[f32], b: &[f32], [batch, m, k, n]: [usize; 4], transpose_b: bool) -> Vec<f32> {
    let mut out = vec![0.0; batch * m * n];
    for bt in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for kk in 0..k {
                    let bv = if transpose_b {
                        b[(bt * n + j) * k + kk]
                    } else {
                        b[(bt * k + kk) * n + j]
                    };
                    acc += a[(bt * m + i) * k + kk] as f64 * bv as f64;
                }
                out[(bt * m + i) * n + j] = acc as f32;
            }
        }
    }
    out
}

/// Softmax over rows of length `d`, computed in f64.
pub fn softmax(x: &[f32], d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        out.extend(row.iter().map(|&v| ((v as f64 - max).exp() / sum) as f32));
    }
    out
}

/// General transpose by multi-index arithmetic.
pub fn transpose(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let mut out = vec![0.0; x.len()];
    let mut idx = vec![0usize; shape.len()];
    for (o, y) in out.iter_mut().enumerate() {
        let mut rem = o;
        for d in (0..out_shape.len()).rev() {
            idx[perm[d]] = rem % out_shape[d];
            rem /= out_shape[d];
        }
        let mut off = 0;
        for d in 0..shape.len() {
            off = off * shape[d] + idx[d];
        }
        *y = x[off];
    }
    out
}

/// `start..end` along `axis`.
pub fn slice(x: &[f32], shape: &[usize], axis: usize, start: usize, end: usize) -> Vec<f32> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for i in start..end {
            for j in 0..inner {
                out.push(x[(o * shape[axis] + i) * inner + j]);
            }
        }
    }
    out
}
