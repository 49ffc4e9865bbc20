//! Winograd F(4x4, 3x3) convolution for 3x3, stride-1 kernels (Lavin & Gray, "Fast Algorithms
//! for Convolutional Neural Networks", 2016).
//!
//! Every 4x4 output tile is `A^T [ (G g G^T) ⊙ (B^T d B) ] A` for the 6x6 input tile `d` and the
//! 3x3 filter `g`. Summed over input channels, the 36 element-wise products become 36
//! independent GEMMs `(C_out x C_in) x (C_in x tiles)`: 36 multiplies per 16 outputs instead of
//! 9 x 16, a quarter of the direct convolution's work, plus the (linear-time) transforms.
//!
//! Layouts (`p`: panel of [`MR`] output channels, `xi`: one of the 36 points, `q`: panel of [`NR`]
//! tiles of a chunk):
//! - taps, stored in the artifact, as large as the checkpoint weight:
//!   `((p * 9 + k) * c_in + ci) * MR + i` for output channel `p * MR + i` and tap `k = 3 ky + kx`
//!   (tap-major, so that the filter transform runs on contiguous `(ci, i)` lanes);
//! - U, the transformed filters (4x the size of the weight), built by [`transform_filters`]:
//!   per call in a workspace, or at compile time and stored for layers with few tiles (see
//!   `compiler::passes::select_winograd`): `((p * 36 + xi) * c_in + ci) * MR + i`, i.e. a GEMM
//!   `A` panel of depth `c_in` for every `(p, xi)`;
//! - V, the transformed input of one chunk of tiles: `xi * vs + (q * c_in + ci) * NR + lane`,
//!   GEMM `B` panels;
//! - M, the products of one chunk: `co * ms + xi * tcp + t` (channel-major, so that the output
//!   transform of a channel reads one contiguous block).
//!
//! The strides `vs` and `ms` are padded by one cache line: unpadded they are often powers of
//! two, and the streams the transforms and GEMMs read and write would map to the same cache
//! sets.
//!
//! Tiles are processed in chunks (one per task), sized by the layer's width (see `chunking`):
//! small enough that a narrow layer's V and M stay in cache, large enough that a wide layer's
//! U is read few times; the transforms vectorize across the tiles of a panel.

use super::conv::ConvGeom;
use super::gemm::{self, Micro, KC, MAX_BLOCKS, MAX_PANELS, MR, NR};
use super::isa::{self, Isa, Path};
use super::SharedOut;
use rayon::prelude::*;

/// Points of the transformed 6x6 tile.
const POINTS: usize = 36;
/// Tiles transformed together (one GEMM `B` panel).
const L: usize = NR;
/// Output tile edge.
const TILE: usize = 4;
/// Most tiles in one chunk (a multiple of `L`): at 512 channels, 128 tiles run as fast as 256
/// (`examples/winograd_bench`) and halve the per-thread V and M scratch (to 19 MB).
const MAX_CHUNK: usize = 128;

/// Floats of the stored taps layout of a `c_out x c_in x 3 x 3` weight (see [`pack_taps`]).
pub fn taps_len(c_out: usize, c_in: usize) -> usize {
    c_out.div_ceil(MR) * MR * c_in * 9
}

/// Floats of the transformed filters U of a `c_out x c_in x 3 x 3` weight.
pub fn transformed_len(c_out: usize, c_in: usize) -> usize {
    POINTS * gemm::packed_a_len(c_out, c_in)
}

/// Whether the Winograd kernel computes this convolution.
pub fn applies(g: &ConvGeom) -> bool {
    g.kernel == [3, 3] && g.stride == [1, 1]
}

/// Rearranges a plain `[c_out, c_in, 3, 3]` weight into the taps layout (compile time).
/// Rows past `c_out` are zero.
pub fn pack_taps(w: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    assert_eq!(w.len(), c_out * c_in * 9, "pack_taps: weight length");
    let mut dst = vec![0.0; taps_len(c_out, c_in)];
    for co in 0..c_out {
        let (p, i) = (co / MR, co % MR);
        for ci in 0..c_in {
            for k in 0..9 {
                dst[((p * 9 + k) * c_in + ci) * MR + i] = w[(co * c_in + ci) * 9 + k];
            }
        }
    }
    dst
}

/// `G x` for a 3-vector (lane-wise): the filter transform of one column or row.
#[inline(always)]
fn g3<const N: usize>(x0: &[f32; N], x1: &[f32; N], x2: &[f32; N]) -> [[f32; N]; 6] {
    const SIXTH: f32 = 1.0 / 6.0;
    const TWELFTH: f32 = 1.0 / 12.0;
    const TWENTYFOURTH: f32 = 1.0 / 24.0;
    let mut y = [[0.0; N]; 6];
    for l in 0..N {
        let (a, b, c) = (x0[l], x1[l], x2[l]);
        y[0][l] = 0.25 * a;
        y[1][l] = -SIXTH * (a + b + c);
        y[2][l] = -SIXTH * (a - b + c);
        y[3][l] = TWENTYFOURTH * a + TWELFTH * b + SIXTH * c;
        y[4][l] = TWENTYFOURTH * a - TWELFTH * b + SIXTH * c;
        y[5][l] = c;
    }
    y
}

/// `B^T x` for a 6-vector (lane-wise): the input transform of one column or row.
#[inline(always)]
fn bt6<const N: usize>(x: [&[f32; N]; 6]) -> [[f32; N]; 6] {
    let mut y = [[0.0; N]; 6];
    for l in 0..N {
        let (x0, x1, x2, x3, x4, x5) = (x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]);
        y[0][l] = 4.0 * x0 - 5.0 * x2 + x4;
        y[1][l] = -4.0 * (x1 + x2) + (x3 + x4);
        y[2][l] = 4.0 * (x1 - x2) + (x4 - x3);
        y[3][l] = 2.0 * (x3 - x1) + (x4 - x2);
        y[4][l] = 2.0 * (x1 - x3) + (x4 - x2);
        y[5][l] = 4.0 * x1 - 5.0 * x3 + x5;
    }
    y
}

/// `A^T x` for a 6-vector (lane-wise): the output transform of one column or row.
#[inline(always)]
fn at6<const N: usize>(x: [&[f32; N]; 6]) -> [[f32; N]; 4] {
    let mut y = [[0.0; N]; 4];
    for l in 0..N {
        let (x0, x1, x2, x3, x4, x5) = (x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]);
        let (s12, d12, s34, d34) = (x1 + x2, x1 - x2, x3 + x4, x3 - x4);
        y[0][l] = x0 + s12 + s34;
        y[1][l] = d12 + 2.0 * d34;
        y[2][l] = s12 + 4.0 * s34;
        y[3][l] = d12 + 8.0 * d34 + x5;
    }
    y
}

/// `G g G^T` for 3x3 filters `g[3 r + s]` (lane-wise), as `u[6 a + b]`.
#[inline(always)]
fn filter_2d<const N: usize>(g: &[[f32; N]; 9]) -> [[f32; N]; POINTS] {
    let mut t = [[[0.0; N]; 3]; 6]; // t[a][s] = (G g)[a][s]
    for s in 0..3 {
        let col = g3(&g[s], &g[3 + s], &g[6 + s]);
        for a in 0..6 {
            t[a][s] = col[a];
        }
    }
    let mut u = [[0.0; N]; POINTS];
    for a in 0..6 {
        let row = g3(&t[a][0], &t[a][1], &t[a][2]);
        u[a * 6..a * 6 + 6].copy_from_slice(&row);
    }
    u
}

/// `B^T d B` for 6x6 tiles `d[6 r + s]` (lane-wise).
#[inline(always)]
fn input_2d<const N: usize>(d: &[[f32; N]; POINTS]) -> [[f32; N]; POINTS] {
    let mut t = [[0.0; N]; POINTS]; // t[6 r' + s] = (B^T d)[r'][s]
    for s in 0..6 {
        let col = bt6([
            &d[s],
            &d[6 + s],
            &d[12 + s],
            &d[18 + s],
            &d[24 + s],
            &d[30 + s],
        ]);
        for r in 0..6 {
            t[6 * r + s] = col[r];
        }
    }
    let mut v = [[0.0; N]; POINTS];
    for r in 0..6 {
        let row = &t[6 * r..6 * r + 6];
        let y = bt6([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
        v[6 * r..6 * r + 6].copy_from_slice(&y);
    }
    v
}

/// `A^T m A` for 6x6 products `m[6 a + b]` (lane-wise), as 4x4 outputs `o[4 i + j]`.
#[inline(always)]
fn output_2d<const N: usize>(m: &[[f32; N]; POINTS]) -> [[f32; N]; 16] {
    let mut t = [[0.0; N]; 24]; // t[6 i + b] = (A^T m)[i][b]
    for b in 0..6 {
        let col = at6([
            &m[b],
            &m[6 + b],
            &m[12 + b],
            &m[18 + b],
            &m[24 + b],
            &m[30 + b],
        ]);
        for i in 0..4 {
            t[6 * i + b] = col[i];
        }
    }
    let mut o = [[0.0; N]; 16];
    for i in 0..4 {
        let row = &t[6 * i..6 * i + 6];
        let y = at6([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
        o[4 * i..4 * i + 4].copy_from_slice(&y);
    }
    o
}

/// Filter transform of lanes `j .. j + N` of one panel (`row = c_in * MR` lanes per tap).
#[inline(always)]
fn transform_lanes<const N: usize>(taps: &[f32], row: usize, j: usize, u: &mut [f32]) {
    let mut g = [[0.0f32; N]; 9];
    for (k, gk) in g.iter_mut().enumerate() {
        gk.copy_from_slice(&taps[k * row + j..][..N]);
    }
    let t = filter_2d(&g);
    for (xi, r) in t.iter().enumerate() {
        u[xi * row + j..][..N].copy_from_slice(r);
    }
}

#[inline(always)]
fn transform_filters_body(taps: &[f32], c_in: usize, u: &mut [f32]) {
    // One panel of MR output channels: taps[k * row + j] -> u[xi * row + j] for the
    // row = c_in * MR lanes j = ci * MR + i.
    const WIDE: usize = 8 * MR;
    let row = c_in * MR;
    let mut j = 0;
    while j + WIDE <= row {
        transform_lanes::<WIDE>(taps, row, j, u);
        j += WIDE;
    }
    while j < row {
        transform_lanes::<MR>(taps, row, j, u);
        j += MR;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_filters_avx2(taps: &[f32], c_in: usize, u: &mut [f32]) {
    transform_filters_body(taps, c_in, u)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_filters_avx512(taps: &[f32], c_in: usize, u: &mut [f32]) {
    transform_filters_body(taps, c_in, u)
}

fn transform_filters_panel(path: Path, taps: &[f32], c_in: usize, u: &mut [f32]) {
    match path.isa() {
        // SAFETY (both): a path exists only if the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { transform_filters_avx512(taps, c_in, u) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { transform_filters_avx2(taps, c_in, u) },
        _ => transform_filters_body(taps, c_in, u),
    }
}

/// Builds the transformed filters U (see the module docs) from the taps layout, in parallel over
/// panels of output channels. `u` must hold at least [`transformed_len`] floats.
pub fn transform_filters(taps: &[f32], c_out: usize, c_in: usize, u: &mut [f32]) {
    assert_eq!(taps.len(), taps_len(c_out, c_in), "winograd: taps length");
    let len = transformed_len(c_out, c_in);
    assert!(u.len() >= len, "winograd: workspace too short");
    if c_in == 0 {
        return;
    }
    let path = isa::path();
    u[..len]
        .par_chunks_mut(POINTS * c_in * MR)
        .zip(taps.par_chunks(c_in * 9 * MR))
        .for_each(|(up, tp)| transform_filters_panel(path, tp, c_in, up));
}

/// `d_s[l] = seg[4 l + s]` for `s < 4`, `l < L`: the columns 0..3 of `L` tiles side by side.
#[inline(always)]
fn deinterleave4(path: Path, seg: &[f32], d: [&mut [f32; L]; 4]) {
    assert!(seg.len() >= TILE * L, "winograd: row segment");
    match path.isa() {
        // SAFETY (both): a path exists only if the CPU has its features, and `seg` holds the
        // 4 L floats read (asserted).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => return unsafe { deinterleave4_avx512(seg, d) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => return unsafe { deinterleave4_avx2(seg, d) },
        _ => {}
    }
    let [d0, d1, d2, d3] = d;
    for l in 0..L {
        d0[l] = seg[TILE * l];
        d1[l] = seg[TILE * l + 1];
        d2[l] = seg[TILE * l + 2];
        d3[l] = seg[TILE * l + 3];
    }
}

/// [`deinterleave4`] with 8-lane loads, a 4x8 transpose by unpacks and shuffles, and a lane
/// permutation back to tile order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn deinterleave4_avx2(seg: &[f32], d: [&mut [f32; L]; 4]) {
    use std::arch::x86_64::*;
    const { assert!(L == 16) };
    let p = seg.as_ptr();
    // After the shuffles a vector holds tiles [0, 2, 4, 6, 1, 3, 5, 7] of its half.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let [d0, d1, d2, d3] = d;
    for half in 0..2 {
        // SAFETY: reads seg[32 half .. 32 half + 32] (the caller checked 4 L = 64 floats) and
        // writes 8 floats at offset 8 half of each 16-float row.
        unsafe {
            let a0 = _mm256_loadu_ps(p.add(32 * half));
            let a1 = _mm256_loadu_ps(p.add(32 * half + 8));
            let a2 = _mm256_loadu_ps(p.add(32 * half + 16));
            let a3 = _mm256_loadu_ps(p.add(32 * half + 24));
            let t0 = _mm256_unpacklo_ps(a0, a1);
            let t1 = _mm256_unpackhi_ps(a0, a1);
            let t2 = _mm256_unpacklo_ps(a2, a3);
            let t3 = _mm256_unpackhi_ps(a2, a3);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            _mm256_storeu_ps(
                d0.as_mut_ptr().add(8 * half),
                _mm256_permutevar8x32_ps(u0, order),
            );
            _mm256_storeu_ps(
                d1.as_mut_ptr().add(8 * half),
                _mm256_permutevar8x32_ps(u1, order),
            );
            _mm256_storeu_ps(
                d2.as_mut_ptr().add(8 * half),
                _mm256_permutevar8x32_ps(u2, order),
            );
            _mm256_storeu_ps(
                d3.as_mut_ptr().add(8 * half),
                _mm256_permutevar8x32_ps(u3, order),
            );
        }
    }
}

/// [`deinterleave4`] with four 16-lane loads: two-source permutes gather columns (0, 1) and
/// (2, 3) of tiles 0..8 and 8..16 into 256-bit halves, and 128-bit shuffles join the halves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn deinterleave4_avx512(seg: &[f32], d: [&mut [f32; L]; 4]) {
    use std::arch::x86_64::*;
    const { assert!(L == 16) };
    let p = seg.as_ptr();
    // Lane k < 8 takes float 4 k + s of the pair, lane 8 + k float 4 k + s + 1 (s = 0 or 2).
    let cols01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    let cols23 = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
    let [d0, d1, d2, d3] = d;
    // SAFETY: reads seg[0 .. 64] (the caller checked 4 L = 64 floats) and writes 16 floats
    // to each row.
    unsafe {
        let a0 = _mm512_loadu_ps(p);
        let a1 = _mm512_loadu_ps(p.add(16));
        let a2 = _mm512_loadu_ps(p.add(32));
        let a3 = _mm512_loadu_ps(p.add(48));
        let lo01 = _mm512_permutex2var_ps(a0, cols01, a1);
        let lo23 = _mm512_permutex2var_ps(a0, cols23, a1);
        let hi01 = _mm512_permutex2var_ps(a2, cols01, a3);
        let hi23 = _mm512_permutex2var_ps(a2, cols23, a3);
        _mm512_storeu_ps(d0.as_mut_ptr(), _mm512_shuffle_f32x4::<0x44>(lo01, hi01));
        _mm512_storeu_ps(d1.as_mut_ptr(), _mm512_shuffle_f32x4::<0xEE>(lo01, hi01));
        _mm512_storeu_ps(d2.as_mut_ptr(), _mm512_shuffle_f32x4::<0x44>(lo23, hi23));
        _mm512_storeu_ps(d3.as_mut_ptr(), _mm512_shuffle_f32x4::<0xEE>(lo23, hi23));
    }
}

/// `dst[4 l + s] = o[s][l] + bias (+ res[4 l + s])` for `s < 4`, `l < L`: one output row of `L`
/// tiles side by side (the inverse of [`deinterleave4`]).
#[inline(always)]
fn interleave4(path: Path, o: [&[f32; L]; 4], bias: f32, res: Option<&[f32]>, dst: &mut [f32]) {
    assert!(
        dst.len() == TILE * L && res.is_none_or(|r| r.len() == TILE * L),
        "winograd: output row segment"
    );
    #[cfg(target_arch = "x86_64")]
    if path.isa() == Isa::Avx512 {
        // SAFETY: a path exists only if the CPU has its features; lengths asserted.
        return unsafe { interleave4_avx512(o, bias, res, dst) };
    }
    for l in 0..L {
        for s in 0..TILE {
            dst[TILE * l + s] = o[s][l] + bias;
        }
    }
    if let Some(r) = res {
        for (d, &a) in dst.iter_mut().zip(r) {
            *d += a;
        }
    }
}

/// [`interleave4`] with 128-bit shuffles pairing columns (0, 1) and (2, 3) per half of the
/// tiles, two-source permutes interleaving them, and 16-lane stores.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn interleave4_avx512(o: [&[f32; L]; 4], bias: f32, res: Option<&[f32]>, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    const { assert!(L == 16) };
    // Sources: x = (column 0 | column 1) and y = (column 2 | column 3) of 8 tiles; output lane
    // 4 k + s takes tile k (+ 4 for the second vector) of column s.
    let first = _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
    let second = _mm512_setr_epi32(4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31);
    let b = _mm512_set1_ps(bias);
    // SAFETY: reads 16 floats of each o[s] and 64 of `res`, writes the 64 of `dst` (the
    // caller checked the lengths).
    unsafe {
        let c0 = _mm512_loadu_ps(o[0].as_ptr());
        let c1 = _mm512_loadu_ps(o[1].as_ptr());
        let c2 = _mm512_loadu_ps(o[2].as_ptr());
        let c3 = _mm512_loadu_ps(o[3].as_ptr());
        let x_lo = _mm512_shuffle_f32x4::<0x44>(c0, c1);
        let x_hi = _mm512_shuffle_f32x4::<0xEE>(c0, c1);
        let y_lo = _mm512_shuffle_f32x4::<0x44>(c2, c3);
        let y_hi = _mm512_shuffle_f32x4::<0xEE>(c2, c3);
        let v = [
            _mm512_permutex2var_ps(x_lo, first, y_lo),
            _mm512_permutex2var_ps(x_lo, second, y_lo),
            _mm512_permutex2var_ps(x_hi, first, y_hi),
            _mm512_permutex2var_ps(x_hi, second, y_hi),
        ];
        let p = dst.as_mut_ptr();
        for (k, v) in v.into_iter().enumerate() {
            let mut y = _mm512_add_ps(v, b);
            if let Some(r) = res {
                y = _mm512_add_ps(y, _mm512_loadu_ps(r.as_ptr().add(16 * k)));
            }
            _mm512_storeu_ps(p.add(16 * k), y);
        }
    }
}

/// What the output transform adds: a bias per channel and a residual per element.
#[derive(Clone, Copy)]
struct Epilogue<'a> {
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
}

/// The static geometry of one Winograd convolution.
#[derive(Clone, Copy)]
struct Geo {
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    th: usize,
    tw: usize,
    pt: isize,
    pl: isize,
    /// The input is stored at half the height and width and read through a nearest 2x
    /// upsampling (`h` and `w` are the upsampled sizes).
    up: bool,
}

impl Geo {
    /// `(image, tile row, tile column)` of tile `t`.
    fn tile(&self, t: usize) -> (usize, usize, usize) {
        let per_img = self.th * self.tw;
        (t / per_img, t % per_img / self.tw, t % self.tw)
    }
}

/// Runs tiles `t0 .. t0 + tc` of the convolution: transform the input, 36 GEMMs, transform back
/// and write the output.
#[inline(always)]
fn chunk_body(
    geo: &Geo,
    x: &[f32],
    u: &[f32],
    ep: Epilogue<'_>,
    (t0, tc): (usize, usize),
    v: &mut [f32],
    m: &mut [f32],
    out: &SharedOut,
    out_len: usize,
    (path, micro): (Path, Micro),
) {
    let Geo {
        c_in,
        c_out,
        h,
        w,
        oh,
        ow,
        ..
    } = *geo;
    let nq = tc.div_ceil(L);
    let tcp = nq * L;
    let (vs, ms) = strides(c_in, c_out, nq);
    let plane_len = if geo.up { h * w / 4 } else { h * w };
    // 1. Input transform, one panel of L tiles at a time.
    for q in 0..nq {
        let lanes = L.min(tc - q * L);
        let mut origin = [(0usize, 0isize, 0isize, false); L];
        for (lane, o) in origin.iter_mut().enumerate().take(lanes) {
            let (b, ty, tx) = geo.tile(t0 + q * L + lane);
            let iy0 = (ty * TILE) as isize - geo.pt;
            let ix0 = (tx * TILE) as isize - geo.pl;
            let interior = iy0 >= 0 && ix0 >= 0 && iy0 + 6 <= h as isize && ix0 + 6 <= w as isize;
            *o = (b * c_in * plane_len, iy0, ix0, interior);
        }
        // The common case: L tiles side by side in one tile row, so that input row r of lane l
        // starts 4 l columns after lane 0's (a stride-4 gather the compiler turns into wide
        // loads and shuffles).
        let (base0, iy00, ix00, _) = origin[0];
        let row_run = lanes == L
            && origin.iter().enumerate().all(|(l, &(b, iy, ix, _))| {
                b == base0 && iy == iy00 && ix == ix00 + (TILE * l) as isize
            });
        // Whether the panel's 6 x (4 L + 2) input window lies inside the image (else rows
        // and columns outside it read as the convolution's zero padding).
        let inside = iy00 >= 0
            && ix00 >= 0
            && iy00 + 6 <= h as isize
            && ix00 + (TILE * L + 2) as isize <= w as isize;
        let mut d = [[0.0f32; L]; POINTS];
        let mut seg_buf = [0.0f32; TILE * L + 2];
        for ci in 0..c_in {
            let plane = &x[base0 + ci * plane_len..][..plane_len];
            if row_run {
                for r in 0..6 {
                    let iy = iy00 + r as isize;
                    let seg: &[f32] = if iy < 0 || iy >= h as isize {
                        seg_buf.fill(0.0);
                        &seg_buf
                    } else if inside && !geo.up {
                        &plane[iy as usize * w + ix00 as usize..][..TILE * L + 2]
                    } else {
                        // Logical column ix of the (upsampled) row; zero outside the image.
                        let iy = iy as usize;
                        for (k, v) in seg_buf.iter_mut().enumerate() {
                            let ix = ix00 + k as isize;
                            *v = if ix < 0 || ix >= w as isize {
                                0.0
                            } else if geo.up {
                                plane[(iy / 2) * (w / 2) + ix as usize / 2]
                            } else {
                                plane[iy * w + ix as usize]
                            };
                        }
                        &seg_buf
                    };
                    let [d0, d1, d2, d3, d4, d5] = &mut d[6 * r..6 * r + 6] else {
                        unreachable!("six rows")
                    };
                    deinterleave4(path, seg, [d0, d1, d2, d3]);
                    // Columns 4 and 5 of tile l are columns 0 and 1 of tile l + 1.
                    d4[..L - 1].copy_from_slice(&d0[1..]);
                    d5[..L - 1].copy_from_slice(&d1[1..]);
                    d4[L - 1] = seg[TILE * L];
                    d5[L - 1] = seg[TILE * L + 1];
                }
            } else {
                d = [[0.0f32; L]; POINTS];
                for (lane, &(base, iy0, ix0, interior)) in origin.iter().enumerate().take(lanes) {
                    let plane = &x[base + ci * plane_len..][..plane_len];
                    if interior && !geo.up {
                        let at = iy0 as usize * w + ix0 as usize;
                        for r in 0..6 {
                            let row = &plane[at + r * w..][..6];
                            for s in 0..6 {
                                d[6 * r + s][lane] = row[s];
                            }
                        }
                    } else {
                        for r in 0..6 {
                            let iy = iy0 + r as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for s in 0..6 {
                                let ix = ix0 + s as isize;
                                if ix >= 0 && ix < w as isize {
                                    let (iy, ix) = (iy as usize, ix as usize);
                                    d[6 * r + s][lane] = if geo.up {
                                        plane[(iy / 2) * (w / 2) + ix / 2]
                                    } else {
                                        plane[iy * w + ix]
                                    };
                                }
                            }
                        }
                    }
                }
            }
            let t = input_2d(&d);
            for (xi, row) in t.iter().enumerate() {
                v[xi * vs + (q * c_in + ci) * L..][..L].copy_from_slice(row);
            }
        }
    }
    // 2. The 36 GEMMs M[xi] = U[xi] x V[xi], a register tile of micro.ra x micro.rb panels
    // at a time.
    let a_panels = c_out.div_ceil(MR);
    let mut acc = [[[0.0f32; NR]; MR]; MAX_BLOCKS];
    for xi in 0..POINTS {
        for k0 in (0..c_in).step_by(KC) {
            let kc = KC.min(c_in - k0);
            for p0 in (0..a_panels).step_by(micro.ra) {
                let na = micro.ra.min(a_panels - p0);
                let a: [&[f32]; MAX_PANELS] = std::array::from_fn(|r| {
                    let p = (p0 + r).min(a_panels - 1);
                    &u[((p * POINTS + xi) * c_in + k0) * MR..][..kc * MR]
                });
                for q0 in (0..nq).step_by(micro.rb) {
                    let nb = micro.rb.min(nq - q0);
                    let b: [&[f32]; MAX_PANELS] = std::array::from_fn(|j| {
                        let q = (q0 + j).min(nq - 1);
                        &v[xi * vs + (q * c_in + k0) * L..][..kc * L]
                    });
                    micro.run(kc, &a[..na], &b[..nb], &mut acc[..na * nb]);
                    for (t, blk) in acc[..na * nb].iter().enumerate() {
                        let (p, q) = (p0 + t / nb, q0 + t % nb);
                        let rows = MR.min(c_out - p * MR);
                        for (i, acc_row) in blk.iter().enumerate().take(rows) {
                            let dst = &mut m[(p * MR + i) * ms + xi * tcp + q * L..][..L];
                            if k0 == 0 {
                                dst.copy_from_slice(acc_row);
                            } else {
                                for (d, &a) in dst.iter_mut().zip(acc_row) {
                                    *d += a;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // 3. Output transform, bias, and the write of each tile's valid pixels. Channel-major, so
    // that each of the 36 point streams of M is read sequentially.
    // Per tile: (image, offset of the tile's first pixel in a plane, valid rows, columns).
    let mut dest = [(0usize, 0usize, 0usize, 0usize); MAX_CHUNK];
    for (t, d) in dest.iter_mut().enumerate().take(tc) {
        let (b, ty, tx) = geo.tile(t0 + t);
        *d = (
            b,
            ty * TILE * ow + tx * TILE,
            TILE.min(oh - ty * TILE),
            TILE.min(ow - tx * TILE),
        );
    }
    // Panels of L full 4x4 tiles side by side in one tile row write 4 runs of 4 L pixels.
    let mut full_run = [false; MAX_CHUNK / L];
    for (q, run) in full_run.iter_mut().enumerate().take(nq) {
        let d = &dest[q * L..q * L + L];
        *run = (q + 1) * L <= tc
            && d.iter().enumerate().all(|(l, &(b, first, rows, cols))| {
                b == d[0].0 && rows == TILE && cols == TILE && first == d[0].1 + TILE * l
            });
    }
    for co in 0..c_out {
        let bv = ep.bias.map_or(0.0, |b| b[co]);
        for q in 0..nq {
            let lanes = L.min(tc - q * L);
            let mut mm = [[0.0f32; L]; POINTS];
            for (xi, row) in mm.iter_mut().enumerate() {
                row.copy_from_slice(&m[co * ms + xi * tcp + q * L..][..L]);
            }
            let o = output_2d(&mm);
            if full_run[q] {
                let (b, first, _, _) = dest[q * L];
                let base = (b * c_out + co) * oh * ow + first;
                assert!(
                    base + 3 * ow + TILE * L <= out_len,
                    "winograd: output index"
                );
                for i in 0..TILE {
                    // SAFETY: in bounds (asserted for the last row); these 4 L pixels of row
                    // i belong to this panel's tiles, which no other chunk covers.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out.0.add(base + i * ow), TILE * L)
                    };
                    let row = [&o[4 * i], &o[4 * i + 1], &o[4 * i + 2], &o[4 * i + 3]];
                    let res = ep.residual.map(|r| &r[base + i * ow..][..TILE * L]);
                    interleave4(path, row, bv, res, dst);
                }
                continue;
            }
            for (lane, &(b, first, rows, cols)) in dest[q * L..].iter().enumerate().take(lanes) {
                let base = (b * c_out + co) * oh * ow + first;
                assert!(
                    base + (rows - 1) * ow + cols <= out_len,
                    "winograd: output index"
                );
                for i in 0..rows {
                    for j in 0..cols {
                        // SAFETY: in bounds (asserted for the last pixel of the tile); the
                        // tile's pixels of image b, channel co belong to this chunk only.
                        let at = base + i * ow + j;
                        let add = ep.residual.map_or(bv, |r| bv + r[at]);
                        unsafe { *out.0.add(at) = o[4 * i + j][lane] + add };
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chunk_avx2(
    geo: &Geo,
    x: &[f32],
    u: &[f32],
    ep: Epilogue<'_>,
    range: (usize, usize),
    v: &mut [f32],
    m: &mut [f32],
    out: &SharedOut,
    out_len: usize,
    kernels: (Path, Micro),
) {
    chunk_body(geo, x, u, ep, range, v, m, out, out_len, kernels)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chunk_avx512(
    geo: &Geo,
    x: &[f32],
    u: &[f32],
    ep: Epilogue<'_>,
    range: (usize, usize),
    v: &mut [f32],
    m: &mut [f32],
    out: &SharedOut,
    out_len: usize,
    kernels: (Path, Micro),
) {
    chunk_body(geo, x, u, ep, range, v, m, out, out_len, kernels)
}

fn chunk(
    path: Path,
    geo: &Geo,
    x: &[f32],
    u: &[f32],
    ep: Epilogue<'_>,
    range: (usize, usize),
    v: &mut [f32],
    m: &mut [f32],
    out: &SharedOut,
    out_len: usize,
) {
    let kernels = (path, Micro::of(path));
    match path.isa() {
        // SAFETY (both): a path exists only if the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { chunk_avx512(geo, x, u, ep, range, v, m, out, out_len, kernels) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { chunk_avx2(geo, x, u, ep, range, v, m, out, out_len, kernels) },
        _ => chunk_body(geo, x, u, ep, range, v, m, out, out_len, kernels),
    }
}

/// The padded point stride of V and channel stride of M (see the module docs) for chunks of
/// `nq` tile panels.
fn strides(c_in: usize, _c_out: usize, nq: usize) -> (usize, usize) {
    (nq * c_in * L + L, POINTS * nq * L + L)
}

/// Tiles per chunk and number of chunks for `tiles` tiles, where `channels` is the wider side
/// of the convolution. A chunk re-reads all of U (`36 c^2` floats), so wide layers take more
/// tiles per chunk to amortize it, and narrow ones fewer, so that their V and M stay in cache:
/// `c^2 / 512` tiles up to [`MAX_CHUNK`] (32 at 128 channels, 128 at 256 and 512), about the
/// best of 16..256 on each SD-VAE shape with `examples/winograd_bench`. The chunk count is a multiple of the thread
/// count when there is enough work.
fn chunking(tiles: usize, channels: usize, threads: usize) -> (usize, usize) {
    let cap = (channels * channels / 512 / L * L).clamp(L, MAX_CHUNK);
    let threads = threads.max(1);
    let chunks = tiles.div_ceil(cap).next_multiple_of(threads).max(1);
    let tc = tiles.div_ceil(chunks).next_multiple_of(L).max(L);
    (tc, tiles.div_ceil(tc))
}

/// 3x3, stride-1 convolution of `x` (`g.input`) with transformed filters `u` (see
/// [`transform_filters`]) into `out` (`g.output()`), adding `bias` per output channel and, if
/// given, `residual` (shaped like `out`) element-wise in the same pass.
///
/// With `upsampled`, `x` holds the input at half of `g.input`'s (even) height and width and is
/// read through a nearest-neighbour 2x upsampling.
pub fn conv3x3(
    g: &ConvGeom,
    x: &[f32],
    upsampled: bool,
    u: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    assert!(applies(g), "winograd: not a 3x3 stride-1 convolution");
    let [n, c_in, h, w] = g.input;
    let [_, c_out, oh, ow] = g.output();
    if upsampled {
        assert!(h % 2 == 0 && w % 2 == 0, "winograd: odd upsampled size");
    }
    let stored = if upsampled { h * w / 4 } else { h * w };
    assert_eq!(x.len(), n * c_in * stored, "winograd: input length");
    assert_eq!(out.len(), n * c_out * oh * ow, "winograd: output length");
    assert!(
        u.len() >= transformed_len(c_out, c_in),
        "winograd: transformed filters too short"
    );
    if let Some(b) = bias {
        assert!(b.len() >= c_out, "winograd: bias too short");
    }
    if let Some(r) = residual {
        assert_eq!(r.len(), out.len(), "winograd: residual length");
    }
    let ep = Epilogue { bias, residual };
    if out.is_empty() {
        return;
    }
    if c_in == 0 {
        for (co, plane) in out.chunks_mut(oh * ow).enumerate() {
            plane.fill(bias.map_or(0.0, |b| b[co % c_out]));
        }
        if let Some(r) = residual {
            for (o, &a) in out.iter_mut().zip(r) {
                *o += a;
            }
        }
        return;
    }
    let geo = Geo {
        c_in,
        c_out,
        h,
        w,
        oh,
        ow,
        th: oh.div_ceil(TILE),
        tw: ow.div_ceil(TILE),
        pt: g.padding[0] as isize,
        pl: g.padding[1] as isize,
        up: upsampled,
    };
    let tiles = n * geo.th * geo.tw;
    let (tc, chunks) = chunking(tiles, c_in.max(c_out), rayon::current_num_threads());
    let out_len = out.len();
    let shared = SharedOut(out.as_mut_ptr());
    let shared = &shared;
    let nq = tc.div_ceil(L);
    let (vs, ms) = strides(c_in, c_out, nq);
    let (v_len, m_len) = (POINTS * vs, c_out * ms);
    let path = isa::path();
    (0..chunks).into_par_iter().for_each(|k| {
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let (v, m) = &mut *scratch;
            // Grow-only per-thread buffers: no allocation once the widest layer has run.
            if v.len() < v_len {
                v.resize(v_len, 0.0);
            }
            if m.len() < m_len {
                m.resize(m_len, 0.0);
            }
            let t0 = k * tc;
            let range = (t0, tc.min(tiles - t0));
            chunk(path, &geo, x, u, ep, range, v, m, shared, out_len);
        })
    });
}

thread_local! {
    /// Each worker thread's V and M buffers, kept between calls.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_reproduce_a_one_dimensional_correlation() {
        // F(4, 3) in 1-D: y[i] = sum_r d[i + r] g[r], through A^T [(G g) * (B^T d)].
        let d = [0.5f32, -1.0, 2.0, 0.25, -0.75, 1.5];
        let g = [0.3f32, -0.2, 0.7];
        let gg = g3(&[g[0]], &[g[1]], &[g[2]]);
        let dd = bt6([&[d[0]], &[d[1]], &[d[2]], &[d[3]], &[d[4]], &[d[5]]]);
        let prod: Vec<[f32; 1]> = (0..6).map(|k| [gg[k][0] * dd[k][0]]).collect();
        let y = at6([&prod[0], &prod[1], &prod[2], &prod[3], &prod[4], &prod[5]]);
        for i in 0..4 {
            let want: f32 = (0..3).map(|r| d[i + r] * g[r]).sum();
            assert!(
                (y[i][0] - want).abs() < 1e-5,
                "y[{i}] = {} != {want}",
                y[i][0]
            );
        }
    }

    #[test]
    fn deinterleave_matches_the_scalar_gather() {
        let seg: Vec<f32> = (0..TILE * L + 2).map(|i| i as f32).collect();
        for isa in Isa::ALL {
            let Ok(path) = isa.check() else {
                println!("skipped: this CPU has no {isa} path ({})", isa.features());
                continue;
            };
            let mut d = [[0.0f32; L]; 4];
            let [d0, d1, d2, d3] = &mut d;
            deinterleave4(path, &seg, [d0, d1, d2, d3]);
            for (s, row) in d.iter().enumerate() {
                for (l, &v) in row.iter().enumerate() {
                    assert_eq!(v, seg[TILE * l + s], "{isa}: column {s} of tile {l}");
                }
            }
            let res: Vec<f32> = (0..TILE * L).map(|i| 0.5 * i as f32).collect();
            let mut back = vec![f32::NAN; TILE * L];
            interleave4(
                path,
                [&d[0], &d[1], &d[2], &d[3]],
                0.25,
                Some(&res),
                &mut back,
            );
            for (i, &v) in back.iter().enumerate() {
                assert_eq!(v, seg[i] + 0.25 + res[i], "{isa}: interleaved element {i}");
            }
        }
    }

    #[test]
    fn chunking_covers_every_tile() {
        for (tiles, ch, threads) in [
            (1, 3, 2),
            (64, 512, 2),
            (4096, 128, 2),
            (17, 8, 3),
            (1000, 64, 1),
        ] {
            let (tc, chunks) = chunking(tiles, ch, threads);
            assert!(tc % L == 0 && tc * chunks >= tiles && tc * (chunks - 1) < tiles);
        }
    }
}
