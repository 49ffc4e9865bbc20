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

impl Im2col<'_> {
    /// Row `(ci, ky, kx)` of a panel whose `width` columns start at output pixel `(oy, ox0)`
    /// and stay in that output row: the source is one input row, contiguous when the stride
    /// is 1.
    #[inline(always)]
    fn fill_row(
        &self,
        (ci, ky, kx): (usize, usize, usize),
        (oy, ox0): (usize, usize),
        width: usize,
        row: &mut [f32],
    ) {
        let [_, _, h, w] = self.g.input;
        let [sh, sw] = self.g.stride;
        let (pt, pl) = (self.g.padding[0] as isize, self.g.padding[1] as isize);
        let iy = (oy * sh) as isize + ky as isize - pt;
        if iy < 0 || iy >= h as isize {
            row.fill(0.0);
            return;
        }
        let line = &self.x[(ci * h + iy as usize) * w..][..w];
        let ix0 = (ox0 * sw) as isize + kx as isize - pl;
        if sw == 1 {
            // Columns jj with 0 <= ix0 + jj < w read line[ix0 + jj]; the rest are padding.
            let lo = (-ix0).clamp(0, width as isize) as usize;
            let hi = (w as isize - ix0).clamp(lo as isize, width as isize) as usize;
            let src = (ix0 + lo as isize) as usize;
            if lo == 0 && hi == NR {
                // The common interior case: a fixed-size copy the compiler inlines.
                let full: &mut [f32; NR] = row.try_into().expect("panel rows are NR wide");
                full.copy_from_slice(&line[src..src + NR]);
            } else {
                row[..lo].fill(0.0);
                row[lo..hi].copy_from_slice(&line[src..src + (hi - lo)]);
                row[hi..].fill(0.0);
            }
            return;
        }
        // Columns jj with 0 <= ix0 + jj * sw < w read line[ix0 + jj * sw].
        let s = sw as isize;
        let lo = ((-ix0).max(0) + s - 1) / s;
        let hi = ((w as isize - ix0 + s - 1) / s).max(0);
        let (lo, hi) = (
            (lo as usize).min(width),
            (hi as usize).clamp(lo as usize, width),
        );
        let src = (ix0 + (lo * sw) as isize) as usize;
        if sw == 2 && lo == 0 && hi == NR && src + 2 * NR <= w {
            // The interior of the downsampling convolutions: every second float of 32, a
            // fixed-size gather the compiler vectorizes.
            let seg: &[f32; 2 * NR] = line[src..src + 2 * NR].try_into().expect("32 floats");
            let full: &mut [f32; NR] = row.try_into().expect("panel rows are NR wide");
            for (d, pair) in full.iter_mut().zip(seg.chunks_exact(2)) {
                *d = pair[0];
            }
            return;
        }
        row[..lo].fill(0.0);
        if hi > lo {
            for (r, &v) in row[lo..hi].iter_mut().zip(line[src..].iter().step_by(sw)) {
                *r = v;
            }
        }
        row[hi..].fill(0.0);
    }

    /// `(ci, ky, kx)` of GEMM row `k`.
    fn tap(&self, k: usize) -> (usize, usize, usize) {
        let [kh, kw] = self.g.kernel;
        (k / (kh * kw), k / kw % kh, k % kw)
    }

    /// The tap after `t`.
    #[inline(always)]
    fn next_tap(&self, (ci, ky, kx): (usize, usize, usize)) -> (usize, usize, usize) {
        let [kh, kw] = self.g.kernel;
        match (kx + 1 == kw, ky + 1 == kh) {
            (false, _) => (ci, ky, kx + 1),
            (true, false) => (ci, ky + 1, 0),
            (true, true) => (ci + 1, 0, 0),
        }
    }
}

impl BSource for Im2col<'_> {
    fn pack_block(&self, k0: usize, kc: usize, j0: usize, ncb: usize, dst: &mut [f32]) {
        let panels = ncb.div_ceil(NR);
        let one_row = |q: usize| {
            let (p, width) = (j0 + q * NR, NR.min(ncb - q * NR));
            p % self.ow + width <= self.ow
        };
        if !(0..panels).all(one_row) {
            return gemm::pack_panels(self, k0, kc, j0, ncb, dst);
        }
        // Row by row across the panels, so that each input row is read once, in order.
        let mut tap = self.tap(k0);
        for kk in 0..kc {
            for q in 0..panels {
                let (p, width) = (j0 + q * NR, NR.min(ncb - q * NR));
                let row = &mut dst[(q * kc + kk) * NR..][..NR];
                self.fill_row(tap, (p / self.ow, p % self.ow), width, row);
            }
            tap = self.next_tap(tap);
        }
    }

    fn pack_panel(&self, k0: usize, kc: usize, j0: usize, width: usize, dst: &mut [f32]) {
        if j0 % self.ow + width <= self.ow {
            let mut tap = self.tap(k0);
            for kk in 0..kc {
                let row = &mut dst[kk * NR..(kk + 1) * NR];
                self.fill_row(tap, (j0 / self.ow, j0 % self.ow), width, row);
                tap = self.next_tap(tap);
            }
            return;
        }
        let [_, _, h, w] = self.g.input;
        let [kh, kw] = self.g.kernel;
        let mut iy0 = [0isize; NR];
        let mut ix0 = [0isize; NR];
        for jj in 0..width {
            let p = j0 + jj;
            iy0[jj] = ((p / self.ow) * self.g.stride[0]) as isize - self.g.padding[0] as isize;
            ix0[jj] = ((p % self.ow) * self.g.stride[1]) as isize - self.g.padding[1] as isize;
        }
        let (mut ci, mut ky, mut kx) =
            (k0 / (kh * kw), (k0 / kw % kh) as isize, (k0 % kw) as isize);
        for kk in 0..kc {
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
            kx += 1;
            if kx == kw as isize {
                kx = 0;
                ky += 1;
                if ky == kh as isize {
                    ky = 0;
                    ci += 1;
                }
            }
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
