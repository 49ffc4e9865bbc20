//! Data movement: nearest 2x upsampling, general transpose, slice.

use rayon::prelude::*;

/// Nearest-neighbour 2x upsampling of `[N, C, H, W]` to `[N, C, 2H, 2W]`.
pub fn upsample_nearest_2x(x: &[f32], planes: usize, h: usize, w: usize, out: &mut [f32]) {
    assert_eq!(x.len(), planes * h * w, "upsample: input length");
    assert_eq!(out.len(), 4 * x.len(), "upsample: output length");
    if h * w == 0 {
        return;
    }
    out.par_chunks_mut(4 * h * w)
        .zip(x.par_chunks(h * w))
        .for_each(|(o, p)| {
            for y in 0..h {
                let src = &p[y * w..(y + 1) * w];
                let (r0, r1) = o[2 * y * 2 * w..(2 * y + 2) * 2 * w].split_at_mut(2 * w);
                for (pair, &v) in r0.chunks_exact_mut(2).zip(src) {
                    pair[0] = v;
                    pair[1] = v;
                }
                r1.copy_from_slice(r0);
            }
        });
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Output dim `i` is input dim `perm[i]`.
pub fn transpose(x: &[f32], shape: &[usize], perm: &[usize], out: &mut [f32]) {
    assert_eq!(
        x.len(),
        shape.iter().product::<usize>(),
        "transpose: input length"
    );
    assert_eq!(out.len(), x.len(), "transpose: output length");
    let r = shape.len();
    if r == 0 || x.is_empty() {
        out.copy_from_slice(x);
        return;
    }
    let in_strides = strides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    // Stride in the input of a step along each output dim.
    let step: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let last = out_shape[r - 1];
    let inner_step = step[r - 1];
    out.par_chunks_mut(last).enumerate().for_each(|(row, o)| {
        let mut rem = row;
        let mut base = 0;
        for d in (0..r - 1).rev() {
            base += (rem % out_shape[d]) * step[d];
            rem /= out_shape[d];
        }
        for (j, y) in o.iter_mut().enumerate() {
            *y = x[base + j * inner_step];
        }
    });
}

/// Takes `start..end` along `axis` of `x: shape`.
pub fn slice(x: &[f32], shape: &[usize], axis: usize, start: usize, end: usize, out: &mut [f32]) {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let dim = shape[axis];
    let run = (end - start) * inner;
    assert_eq!(x.len(), outer * dim * inner, "slice: input length");
    assert_eq!(out.len(), outer * run, "slice: output length");
    if run == 0 {
        return;
    }
    for (o, chunk) in out.chunks_mut(run).enumerate() {
        let from = (o * dim + start) * inner;
        chunk.copy_from_slice(&x[from..from + run]);
    }
}
