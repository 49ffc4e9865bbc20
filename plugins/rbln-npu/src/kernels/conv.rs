//! 2-D convolution as a GEMM: `out[co, p] = W[co, (ci, ky, kx)] x im2col(x)[(ci, ky, kx), p]`,
//! where the im2col columns are gathered panel by panel inside the GEMM (never materialized).

use super::gemm::{self, BSource, COut, NR};

/// Static geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    /// Input `[N, C_in, H, W]`.
    pub input: [usize; 4],
    /// Output channels.
    pub c_out: usize,
    /// Kernel `[KH, KW]`.
    pub kernel: [usize; 2],
    /// `[stride_h, stride_w]`.
    pub stride: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub padding: [usize; 4],
}

impl ConvGeom {
    /// Output `[N, C_out, OH, OW]`.
    pub fn output(&self) -> [usize; 4] {
        let [n, _, h, w] = self.input;
        let [pt, pl, pb, pr] = self.padding;
        [
            n,
            self.c_out,
            (h + pt + pb - self.kernel[0]) / self.stride[0] + 1,
            (w + pl + pr - self.kernel[1]) / self.stride[1] + 1,
        ]
    }
    /// GEMM depth `C_in * KH * KW`.
    pub fn depth(&self) -> usize {
        self.input[1] * self.kernel[0] * self.kernel[1]
    }
}

/// The im2col matrix of one image, read on demand.
struct Im2col<'a> {
    x: &'a [f32],
    g: ConvGeom,
    ow: usize,
}

impl BSource for Im2col<'_> {
    fn pack_panel(&self, k0: usize, kc: usize, j0: usize, width: usize, dst: &mut [f32]) {
        let [_, _, h, w] = self.g.input;
        let [kh, kw] = self.g.kernel;
        let mut iy0 = [0isize; NR];
        let mut ix0 = [0isize; NR];
        for jj in 0..width {
            let p = j0 + jj;
            iy0[jj] = ((p / self.ow) * self.g.stride[0]) as isize - self.g.padding[0] as isize;
            ix0[jj] = ((p % self.ow) * self.g.stride[1]) as isize - self.g.padding[1] as isize;
        }
        for kk in 0..kc {
            let kidx = k0 + kk;
            let ci = kidx / (kh * kw);
            let ky = (kidx / kw % kh) as isize;
            let kx = (kidx % kw) as isize;
            let plane = &self.x[ci * h * w..(ci + 1) * h * w];
            let row = &mut dst[kk * NR..(kk + 1) * NR];
            for jj in 0..width {
                let (iy, ix) = (iy0[jj] + ky, ix0[jj] + kx);
                row[jj] = if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                    plane[iy as usize * w + ix as usize]
                } else {
                    0.0
                };
            }
            row[width..].fill(0.0);
        }
    }
}

/// Convolution with weights already packed by [`gemm::pack_a`] as a `C_out x (C_in*KH*KW)`
/// matrix. `out` has the length of [`ConvGeom::output`].
pub fn conv2d_packed(
    g: &ConvGeom,
    x: &[f32],
    w_packed: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let [n, c, h, w] = g.input;
    let [_, co, oh, ow] = g.output();
    let (img, oimg) = (c * h * w, co * oh * ow);
    assert_eq!(x.len(), n * img, "conv2d: input length");
    assert_eq!(out.len(), n * oimg, "conv2d: output length");
    for b in 0..n {
        let src = Im2col {
            x: &x[b * img..(b + 1) * img],
            g: *g,
            ow,
        };
        let c_out = COut {
            data: &mut out[b * oimg..(b + 1) * oimg],
            rs: oh * ow,
            cs: 1,
        };
        gemm::gemm(co, oh * ow, g.depth(), w_packed, &src, bias, c_out);
    }
}

/// Convolution with plain `[C_out, C_in, KH, KW]` weights (packed on the fly).
pub fn conv2d(g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let packed = gemm::pack_a(w, g.c_out, g.depth());
    conv2d_packed(g, x, &packed, bias, out);
}
