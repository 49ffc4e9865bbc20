//! Cache-blocked single-precision GEMM: `C = A x B (+ bias per row of C)`.
//!
//! `A` (`m x k`) is packed into panels of [`MR`] rows (see [`pack_a`]); weights are packed once at
//! compile time. `B` (`k x n`) is gathered block by block from a [`BSource`] (a plain matrix, a
//! transposed matrix, or an im2col view of an image), so no full im2col buffer is ever built.
//! Column blocks of `C` run in parallel on rayon's pool.

use super::isa::{self, Isa, Path};
use super::SharedOut;
use rayon::prelude::*;

/// Rows of an `A` panel (micro-tile height).
pub const MR: usize = 6;
/// Columns of a `B` panel (micro-tile width).
pub const NR: usize = 16;
/// Depth of one k block (the packed `B` block is `KC x nc`).
pub(crate) const KC: usize = 256;
/// Widest column block handled by one task.
const NC_MAX: usize = 256;

/// Number of floats of `A` (`m x k`) packed by [`pack_a`].
pub fn packed_a_len(m: usize, k: usize) -> usize {
    m.div_ceil(MR) * MR * k
}

/// Packs row-major `a` (`m x k`) into panels of [`MR`] rows: panel `p`, depth `kk`, row `i`
/// lives at `(p * k + kk) * MR + i`. Rows past `m` are zero.
pub fn pack_a(a: &[f32], m: usize, k: usize) -> Vec<f32> {
    assert_eq!(a.len(), m * k, "pack_a: matrix length");
    let mut dst = vec![0.0; packed_a_len(m, k)];
    for p in 0..m.div_ceil(MR) {
        for i in 0..MR.min(m - p * MR) {
            let row = &a[(p * MR + i) * k..(p * MR + i + 1) * k];
            for (kk, &v) in row.iter().enumerate() {
                dst[(p * k + kk) * MR + i] = v;
            }
        }
    }
    dst
}

/// Packs `a^T` where `a` is row-major `k x m` (so `A = a^T` is `m x k`), like [`pack_a`].
pub fn pack_a_transposed(a: &[f32], m: usize, k: usize) -> Vec<f32> {
    assert_eq!(a.len(), m * k, "pack_a_transposed: matrix length");
    let mut dst = vec![0.0; packed_a_len(m, k)];
    for p in 0..m.div_ceil(MR) {
        let rows = MR.min(m - p * MR);
        for kk in 0..k {
            dst[(p * k + kk) * MR..][..rows].copy_from_slice(&a[kk * m + p * MR..][..rows]);
        }
    }
    dst
}

/// Where the columns of `B` come from.
pub trait BSource: Sync {
    /// Writes `B[k0..k0 + kc, j0..j0 + width]` into `dst` (`kc * NR` floats) as one panel:
    /// row `kk`, column `jj` at `kk * NR + jj`; columns `width..NR` must be zero.
    fn pack_panel(&self, k0: usize, kc: usize, j0: usize, width: usize, dst: &mut [f32]);

    /// Packs the `ncb` columns from `j0` as consecutive panels (panel `q` at `q * kc * NR`).
    /// Sources override it when walking all panels together reads memory in a better order.
    fn pack_block(&self, k0: usize, kc: usize, j0: usize, ncb: usize, dst: &mut [f32]) {
        pack_panels(self, k0, kc, j0, ncb, dst)
    }
}

/// [`BSource::pack_block`] panel by panel with [`BSource::pack_panel`].
pub fn pack_panels<B: BSource + ?Sized>(
    b: &B,
    k0: usize,
    kc: usize,
    j0: usize,
    ncb: usize,
    dst: &mut [f32],
) {
    for q in 0..ncb.div_ceil(NR) {
        let width = NR.min(ncb - q * NR);
        b.pack_panel(
            k0,
            kc,
            j0 + q * NR,
            width,
            &mut dst[q * kc * NR..][..kc * NR],
        );
    }
}

/// A row-major `k x n` matrix with row stride `ld`.
pub struct RowMajorB<'a> {
    /// Elements.
    pub data: &'a [f32],
    /// Row stride.
    pub ld: usize,
}

impl BSource for RowMajorB<'_> {
    fn pack_panel(&self, k0: usize, kc: usize, j0: usize, width: usize, dst: &mut [f32]) {
        for kk in 0..kc {
            let src = &self.data[(k0 + kk) * self.ld + j0..][..width];
            let row = &mut dst[kk * NR..(kk + 1) * NR];
            row[..width].copy_from_slice(src);
            row[width..].fill(0.0);
        }
    }
}

/// `B = M^T` where `M` is a row-major `n x k` matrix with row stride `ld`.
pub struct TransposedB<'a> {
    /// Elements of `M`.
    pub data: &'a [f32],
    /// Row stride of `M`.
    pub ld: usize,
}

impl BSource for TransposedB<'_> {
    fn pack_panel(&self, k0: usize, kc: usize, j0: usize, width: usize, dst: &mut [f32]) {
        if width < NR {
            dst[..kc * NR].fill(0.0);
        }
        for jj in 0..width {
            let src = &self.data[(j0 + jj) * self.ld + k0..][..kc];
            for (kk, &v) in src.iter().enumerate() {
                dst[kk * NR + jj] = v;
            }
        }
    }
}

/// The destination `C`: element `(i, j)` at `i * rs + j * cs`.
pub struct COut<'a> {
    /// Storage.
    pub data: &'a mut [f32],
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

/// The accumulators of one `A` panel times one `B` panel: an `MR x NR` block of `C`.
pub(crate) type Block = [[f32; NR]; MR];

/// A path's micro-kernel: `kc` depth steps of up to `ra` `A` panels (of [`MR`] rows) times up to
/// `rb` `B` panels (of [`NR`] columns), a register tile of `ra * MR x rb * NR` accumulators.
/// The panels are the packed layouts above, so every path reads the same packing (and the
/// same artifacts).
#[derive(Clone, Copy)]
pub(crate) struct Micro {
    /// `A` panels per tile.
    pub(crate) ra: usize,
    /// `B` panels per tile.
    pub(crate) rb: usize,
    /// `f(kc, a, b, out)`: `out[r * b.len() + j] = a[r] x b[j]`, for `1..=ra` panels `a`
    /// (`kc * MR` floats each) and `1..=rb` panels `b` (`kc * NR` floats each).
    f: MicroFn,
}

/// The signature of [`Micro`]'s kernel.
type MicroFn = fn(usize, &[&[f32]], &[&[f32]], &mut [Block]);

impl Micro {
    /// The micro-kernel of `path`.
    pub(crate) fn of(path: Path) -> Micro {
        match path.isa() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Micro {
                ra: 2,
                rb: 2,
                f: micro_avx512_12x32,
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Micro {
                ra: 1,
                rb: 1,
                f: micro_avx2_entry,
            },
            _ => Micro {
                ra: 1,
                rb: 1,
                f: micro_portable,
            },
        }
    }

    /// `out[r * b.len() + j] = a[r] x b[j]` over depth `kc` (see [`Micro`]'s field `f`).
    #[inline(always)]
    pub(crate) fn run(&self, kc: usize, a: &[&[f32]], b: &[&[f32]], out: &mut [Block]) {
        (self.f)(kc, a, b, out)
    }
}

#[inline(always)]
fn micro_body(kc: usize, a: &[f32], b: &[f32]) -> Block {
    let mut acc = [[0.0f32; NR]; MR];
    for (ak, bk) in a[..kc * MR]
        .chunks_exact(MR)
        .zip(b[..kc * NR].chunks_exact(NR))
    {
        for i in 0..MR {
            let av = ak[i];
            for j in 0..NR {
                acc[i][j] += av * bk[j];
            }
        }
    }
    acc
}

fn micro_portable(kc: usize, a: &[&[f32]], b: &[&[f32]], out: &mut [Block]) {
    out[0] = micro_body(kc, a[0], b[0]);
}

/// The 6x16 AVX2+FMA micro-kernel written with intrinsics, so that it stays in registers at
/// any optimization level: 12 accumulators, two `B` loads and one broadcast per row and depth.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn micro_avx2_fma(kc: usize, a: &[f32], b: &[f32]) -> Block {
    use std::arch::x86_64::*;
    const { assert!(MR == 6 && NR == 16) };
    assert!(
        a.len() >= kc * MR && b.len() >= kc * NR,
        "micro-kernel: panel lengths"
    );
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let z = _mm256_setzero_ps();
    let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
    let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
    for k in 0..kc {
        // SAFETY: k < kc and the panel lengths were asserted above, so every read of
        // `ap[k*MR .. k*MR + 6]` and `bp[k*NR .. k*NR + 16]` is in bounds.
        unsafe {
            let b0 = _mm256_loadu_ps(bp.add(k * NR));
            let b1 = _mm256_loadu_ps(bp.add(k * NR + 8));
            let a = ap.add(k * MR);
            let x = _mm256_broadcast_ss(&*a);
            c00 = _mm256_fmadd_ps(x, b0, c00);
            c01 = _mm256_fmadd_ps(x, b1, c01);
            let x = _mm256_broadcast_ss(&*a.add(1));
            c10 = _mm256_fmadd_ps(x, b0, c10);
            c11 = _mm256_fmadd_ps(x, b1, c11);
            let x = _mm256_broadcast_ss(&*a.add(2));
            c20 = _mm256_fmadd_ps(x, b0, c20);
            c21 = _mm256_fmadd_ps(x, b1, c21);
            let x = _mm256_broadcast_ss(&*a.add(3));
            c30 = _mm256_fmadd_ps(x, b0, c30);
            c31 = _mm256_fmadd_ps(x, b1, c31);
            let x = _mm256_broadcast_ss(&*a.add(4));
            c40 = _mm256_fmadd_ps(x, b0, c40);
            c41 = _mm256_fmadd_ps(x, b1, c41);
            let x = _mm256_broadcast_ss(&*a.add(5));
            c50 = _mm256_fmadd_ps(x, b0, c50);
            c51 = _mm256_fmadd_ps(x, b1, c51);
        }
    }
    let mut out = [[0.0f32; NR]; MR];
    let rows = [
        (c00, c01),
        (c10, c11),
        (c20, c21),
        (c30, c31),
        (c40, c41),
        (c50, c51),
    ];
    for (o, (lo, hi)) in out.iter_mut().zip(rows) {
        // SAFETY: each row of `out` holds 16 floats: two unaligned 8-float stores fit.
        unsafe {
            _mm256_storeu_ps(o.as_mut_ptr(), lo);
            _mm256_storeu_ps(o.as_mut_ptr().add(8), hi);
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
fn micro_avx2_entry(kc: usize, a: &[&[f32]], b: &[&[f32]], out: &mut [Block]) {
    // SAFETY: `Micro::of` returns this entry only for an AVX2 path, whose existence proves
    // that the CPU has AVX2 and FMA.
    out[0] = unsafe { micro_avx2_fma(kc, a[0], b[0]) };
}

/// The AVX-512 register tile: `RA` `A` panels times `RB` `B` panels, `RA * MR * RB` zmm
/// accumulators (24 of the 32 registers at 2 x 2, i.e. 12 x 32), `RB` loads of `B` and one
/// broadcast of `A` per row and depth.
///
/// # Safety
/// The CPU must have AVX-512F; `a[r]` must point to `kc * MR` floats and `b[j]` to `kc * NR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const RA: usize, const RB: usize>(
    kc: usize,
    a: [*const f32; RA],
    b: [*const f32; RB],
    out: &mut [Block],
) {
    use std::arch::x86_64::*;
    const { assert!(NR == 16) };
    let mut c = [[[_mm512_setzero_ps(); RB]; MR]; RA];
    for k in 0..kc {
        // SAFETY: k < kc, and the caller guarantees kc * NR floats behind every b[j] and
        // kc * MR behind every a[r].
        unsafe {
            let mut bv = [_mm512_setzero_ps(); RB];
            for (v, p) in bv.iter_mut().zip(b) {
                *v = _mm512_loadu_ps(p.add(k * NR));
            }
            for (cr, p) in c.iter_mut().zip(a) {
                for (i, ci) in cr.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*p.add(k * MR + i));
                    for (acc, &bj) in ci.iter_mut().zip(&bv) {
                        *acc = _mm512_fmadd_ps(x, bj, *acc);
                    }
                }
            }
        }
    }
    for (r, cr) in c.iter().enumerate() {
        for (i, ci) in cr.iter().enumerate() {
            for (j, &v) in ci.iter().enumerate() {
                // SAFETY: a row of a block holds NR = 16 floats.
                unsafe { _mm512_storeu_ps(out[r * RB + j][i].as_mut_ptr(), v) };
            }
        }
    }
}

/// Checks the panel lengths of a micro-kernel call.
#[inline(always)]
fn check_panels(kc: usize, a: &[&[f32]], b: &[&[f32]], out: &[Block]) {
    assert!(
        a.iter().all(|p| p.len() >= kc * MR)
            && b.iter().all(|p| p.len() >= kc * NR)
            && out.len() >= a.len() * b.len(),
        "micro-kernel: panel lengths"
    );
}

/// Calls the [`tile_avx512`] matching the panel counts, one of the listed `(ra, rb)` shapes.
#[cfg(target_arch = "x86_64")]
macro_rules! avx512_tiles {
    ($kc:expr, $a:expr, $b:expr, $out:expr; $(($ra:literal, $rb:literal)),+) => {{
        let (kc, a, b, out): (usize, &[&[f32]], &[&[f32]], &mut [Block]) = ($kc, $a, $b, $out);
        check_panels(kc, a, b, out);
        match (a.len(), b.len()) {
            $(($ra, $rb) => {
                // SAFETY: `Micro::of` returns this entry only for an AVX-512 path, whose
                // existence proves that the CPU has AVX-512F; the panel lengths were checked.
                unsafe {
                    tile_avx512::<$ra, $rb>(
                        kc,
                        std::array::from_fn(|r| a[r].as_ptr()),
                        std::array::from_fn(|j| b[j].as_ptr()),
                        out,
                    )
                }
            })+
            other => unreachable!("micro-kernel: {other:?} panels"),
        }
    }};
}

#[cfg(target_arch = "x86_64")]
fn micro_avx512_12x32(kc: usize, a: &[&[f32]], b: &[&[f32]], out: &mut [Block]) {
    avx512_tiles!(kc, a, b, out; (2, 2), (2, 1), (1, 2), (1, 1))
}

/// The other register tiles that fit 32 zmm registers, measured against 12x32 by the
/// `avx512_tile_shapes_speed` probe.
#[cfg(all(test, target_arch = "x86_64"))]
fn micro_avx512_6x64(kc: usize, a: &[&[f32]], b: &[&[f32]], out: &mut [Block]) {
    avx512_tiles!(kc, a, b, out; (1, 4), (1, 3), (1, 2), (1, 1))
}

#[cfg(all(test, target_arch = "x86_64"))]
fn micro_avx512_24x16(kc: usize, a: &[&[f32]], b: &[&[f32]], out: &mut [Block]) {
    avx512_tiles!(kc, a, b, out; (4, 1), (3, 1), (2, 1), (1, 1))
}

/// `C[m x n] = A_packed[m x k] x B[k x n] (+ bias[i] on row i)`.
///
/// Panics if `a_packed` or `c` is too short for the given sizes (callers check shapes first).
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a_packed: &[f32],
    b: &dyn BSource,
    bias: Option<&[f32]>,
    c: COut<'_>,
) {
    gemm_on(
        Micro::of(isa::path()),
        (m, n, k),
        a_packed,
        b,
        bias,
        c,
        true,
    )
}

/// [`gemm`] on the calling thread only, for callers that already run in parallel.
pub fn gemm_serial(
    m: usize,
    n: usize,
    k: usize,
    a_packed: &[f32],
    b: &dyn BSource,
    bias: Option<&[f32]>,
    c: COut<'_>,
) {
    gemm_on(
        Micro::of(isa::path()),
        (m, n, k),
        a_packed,
        b,
        bias,
        c,
        false,
    )
}

fn gemm_on(
    micro: Micro,
    (m, n, k): (usize, usize, usize),
    a_packed: &[f32],
    b: &dyn BSource,
    bias: Option<&[f32]>,
    c: COut<'_>,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        a_packed.len() >= packed_a_len(m, k),
        "gemm: packed A too short"
    );
    assert!(
        (m - 1) * c.rs + (n - 1) * c.cs < c.data.len(),
        "gemm: C too short"
    );
    if let Some(bias) = bias {
        assert!(bias.len() >= m, "gemm: bias too short");
    }
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                c.data[i * c.rs + j * c.cs] = bias.map_or(0.0, |b| b[i]);
            }
        }
        return;
    }
    let tasks_wanted = if parallel {
        4 * rayon::current_num_threads()
    } else {
        1
    };
    let nc = n
        .div_ceil(tasks_wanted)
        .next_multiple_of(NR * micro.rb)
        .clamp(NR, NC_MAX);
    let (rs, cs) = (c.rs, c.cs);
    let out = SharedOut(c.data.as_mut_ptr());
    let out = &out;
    let blocks = n.div_ceil(nc);
    let a_panels = m.div_ceil(MR);
    let block = |buf: &mut Vec<f32>, bi: usize| {
        let j0 = bi * nc;
        let ncb = nc.min(n - j0);
        let panels = ncb.div_ceil(NR);
        let mut acc = [[[0.0f32; NR]; MR]; MAX_BLOCKS];
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            b.pack_block(k0, kc, j0, ncb, &mut buf[..panels * kc * NR]);
            for p0 in (0..a_panels).step_by(micro.ra) {
                let na = micro.ra.min(a_panels - p0);
                let a: [&[f32]; MAX_PANELS] = std::array::from_fn(|r| {
                    let p = (p0 + r).min(a_panels - 1);
                    &a_packed[(p * k + k0) * MR..][..kc * MR]
                });
                for q0 in (0..panels).step_by(micro.rb) {
                    let nb = micro.rb.min(panels - q0);
                    let bp: [&[f32]; MAX_PANELS] = std::array::from_fn(|j| {
                        let q = (q0 + j).min(panels - 1);
                        &buf[q * kc * NR..][..kc * NR]
                    });
                    micro.run(kc, &a[..na], &bp[..nb], &mut acc[..na * nb]);
                    for (t, blk) in acc[..na * nb].iter().enumerate() {
                        let (p, q) = (p0 + t / nb, q0 + t % nb);
                        let tile = Tile {
                            row0: p * MR,
                            rows: MR.min(m - p * MR),
                            col0: j0 + q * NR,
                            cols: NR.min(ncb - q * NR),
                        };
                        // SAFETY: the tile lies inside C (its largest element was checked
                        // against c.data's length above), and its columns belong to this
                        // task's block [j0, j0 + ncb): no other task writes them.
                        unsafe { tile.store(blk, out, (rs, cs), k0 == 0, bias) };
                    }
                }
            }
        }
    };
    if parallel {
        (0..blocks)
            .into_par_iter()
            .for_each_init(|| vec![0.0f32; KC * nc], block);
    } else {
        let mut buf = vec![0.0f32; KC * nc];
        (0..blocks).for_each(|bi| block(&mut buf, bi));
    }
}

/// Most `A` or `B` panels in one micro-kernel call, over all paths.
pub(crate) const MAX_PANELS: usize = 4;
/// Most blocks in one micro-kernel call.
pub(crate) const MAX_BLOCKS: usize = 4;

/// Where one [`Block`] lands in `C`: rows `row0 .. row0 + rows`, columns `col0 .. col0 + cols`.
struct Tile {
    row0: usize,
    rows: usize,
    col0: usize,
    cols: usize,
}

impl Tile {
    /// Writes (`first`: with the bias of each row) or adds `blk` into `C` at `out` with strides
    /// `(rs, cs)`.
    ///
    /// # Safety
    /// Every element `(row0 + i) * rs + (col0 + j) * cs` for `i < rows`, `j < cols` must lie in
    /// the buffer behind `out`, and no other thread may access them meanwhile.
    #[inline(always)]
    unsafe fn store(
        &self,
        blk: &Block,
        out: &SharedOut,
        (rs, cs): (usize, usize),
        first: bool,
        bias: Option<&[f32]>,
    ) {
        for (i, acc_row) in blk.iter().enumerate().take(self.rows) {
            let row = self.row0 + i;
            let base = row * rs + self.col0 * cs;
            let add = if first {
                bias.map_or(0.0, |b| b[row])
            } else {
                0.0
            };
            if cs == 1 {
                // SAFETY: the caller guarantees that this row's `cols` elements are ours.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(base), self.cols) };
                if first {
                    for (d, &v) in dst.iter_mut().zip(acc_row) {
                        *d = v + add;
                    }
                } else {
                    for (d, &v) in dst.iter_mut().zip(acc_row) {
                        *d += v;
                    }
                }
                continue;
            }
            for (jj, &v) in acc_row.iter().enumerate().take(self.cols) {
                // SAFETY: as above, with column stride cs.
                unsafe {
                    let dst = out.0.add(base + jj * cs);
                    *dst = if first { v + add } else { *dst + v };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_s_micro_kernel_matches_the_dot_products() {
        let kc = 37;
        let a: Vec<Vec<f32>> = (0..MAX_PANELS)
            .map(|r| {
                (0..kc * MR)
                    .map(|i| ((i * 7 + r) % 13) as f32 - 6.0)
                    .collect()
            })
            .collect();
        let b: Vec<Vec<f32>> = (0..MAX_PANELS)
            .map(|q| {
                (0..kc * NR)
                    .map(|i| ((i * 5 + q) % 11) as f32 * 0.25)
                    .collect()
            })
            .collect();
        for isa in Isa::ALL {
            let Ok(path) = isa.check() else {
                println!("skipped: this CPU has no {isa} path ({})", isa.features());
                continue;
            };
            let micro = Micro::of(path);
            for na in 1..=micro.ra {
                for nb in 1..=micro.rb {
                    let ap: Vec<&[f32]> = a[..na].iter().map(Vec::as_slice).collect();
                    let bp: Vec<&[f32]> = b[..nb].iter().map(Vec::as_slice).collect();
                    let mut out = vec![[[f32::NAN; NR]; MR]; na * nb];
                    micro.run(kc, &ap, &bp, &mut out);
                    for (t, blk) in out.iter().enumerate() {
                        let (ar, bq) = (&a[t / nb], &b[t % nb]);
                        for i in 0..MR {
                            for j in 0..NR {
                                let dot: f32 =
                                    (0..kc).map(|k| ar[k * MR + i] * bq[k * NR + j]).sum();
                                assert!(
                                    (blk[i][j] - dot).abs() < 1e-3,
                                    "{isa} {na}x{nb} block {t} ({i}, {j})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Tile-shape probe: `cargo test -p rbln-npu --release --lib -- --ignored --nocapture
    /// avx512_tile_shapes_speed`. One thread, the shapes alternating run by run; medians.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[ignore]
    fn avx512_tile_shapes_speed() {
        let Ok(path) = Isa::Avx512.check() else {
            println!("skipped: this CPU has no avx512 path");
            return;
        };
        let mut shapes = vec![
            (
                "12x32",
                Micro {
                    ra: 2,
                    rb: 2,
                    f: micro_avx512_12x32,
                },
            ),
            (
                "6x64",
                Micro {
                    ra: 1,
                    rb: 4,
                    f: micro_avx512_6x64,
                },
            ),
            (
                "24x16",
                Micro {
                    ra: 4,
                    rb: 1,
                    f: micro_avx512_24x16,
                },
            ),
        ];
        if let Ok(p) = Isa::Avx2.check() {
            shapes.push(("avx2 6x16", Micro::of(p)));
        }
        let _ = path;
        for (m, n, k) in [
            (512, 128, 512),
            (256, 128, 256),
            (128, 1024, 256),
            (512, 512, 512),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 17) as f32 * 0.1).collect();
            let ap = pack_a(&a, m, k);
            let mut want = vec![0.0f32; m * n];
            let mut times = vec![Vec::new(); shapes.len()];
            for round in 0..10 {
                for (s, (name, micro)) in shapes.iter().enumerate() {
                    let mut c = vec![0.0f32; m * n];
                    let out = COut {
                        data: &mut c,
                        rs: n,
                        cs: 1,
                    };
                    let t = std::time::Instant::now();
                    gemm_on(
                        *micro,
                        (m, n, k),
                        &ap,
                        &RowMajorB { data: &b, ld: n },
                        None,
                        out,
                        false,
                    );
                    times[s].push(t.elapsed().as_secs_f64());
                    if round == 0 && s == 0 {
                        want = c;
                    } else if round == 0 {
                        let err = c
                            .iter()
                            .zip(&want)
                            .fold(0f32, |e, (x, y)| e.max((x - y).abs()));
                        assert!(
                            err <= 1e-3 * want.iter().fold(1f32, |e, y| e.max(y.abs())),
                            "{name}"
                        );
                    }
                }
            }
            let line: Vec<String> = shapes
                .iter()
                .zip(&mut times)
                .map(|((name, _), t)| {
                    t.sort_by(f64::total_cmp);
                    let med = t[t.len() / 2];
                    format!("{name} {:.1} GFLOP/s", 2.0 * (m * n * k) as f64 / med / 1e9)
                })
                .collect();
            println!("{m}x{n}x{k}, 1 thread: {}", line.join(", "));
        }
    }
}
