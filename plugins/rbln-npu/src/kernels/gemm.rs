//! Cache-blocked single-precision GEMM: `C = A x B (+ bias per row of C)`.
//!
//! `A` (`m x k`) is packed into panels of [`MR`] rows (see [`pack_a`]); weights are packed once at
//! compile time. `B` (`k x n`) is gathered block by block from a [`BSource`] (a plain matrix, a
//! transposed matrix, or an im2col view of an image), so no full im2col buffer is ever built.
//! Column blocks of `C` run in parallel on rayon's pool.

use super::SharedOut;
use rayon::prelude::*;
use std::sync::OnceLock;

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

/// A micro-kernel: `kc` depth steps of an `MR`-row `A` panel times an `NR`-column `B` panel.
pub(crate) type MicroKernel = fn(usize, &[f32], &[f32]) -> [[f32; NR]; MR];

#[inline(always)]
fn micro_body(kc: usize, a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
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

fn micro_portable(kc: usize, a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    micro_body(kc, a, b)
}

/// The 6x16 AVX2+FMA micro-kernel written with intrinsics, so that it stays in registers at
/// any optimization level: 12 accumulators, two `B` loads and one broadcast per row and depth.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn micro_avx2_fma(kc: usize, a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
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
fn micro_avx2_entry(kc: usize, a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    // SAFETY: this entry is only selected by `micro_kernel` after runtime detection of AVX2 and FMA.
    unsafe { micro_avx2_fma(kc, a, b) }
}

/// The micro-kernel chosen once for this CPU.
pub(crate) fn micro_kernel() -> MicroKernel {
    static K: OnceLock<MicroKernel> = OnceLock::new();
    *K.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return micro_avx2_entry as MicroKernel;
        }
        micro_portable as MicroKernel
    })
}

/// Name of the selected micro-kernel, for descriptions.
pub fn kernel_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if micro_kernel() as usize == micro_avx2_entry as MicroKernel as usize {
        return "avx2+fma";
    }
    "portable"
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
    gemm_on(m, n, k, a_packed, b, bias, c, true)
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
    gemm_on(m, n, k, a_packed, b, bias, c, false)
}

#[allow(clippy::too_many_arguments)]
fn gemm_on(
    m: usize,
    n: usize,
    k: usize,
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
    let kernel = micro_kernel();
    let tasks_wanted = if parallel {
        4 * rayon::current_num_threads()
    } else {
        1
    };
    let nc = n
        .div_ceil(tasks_wanted)
        .next_multiple_of(NR)
        .clamp(NR, NC_MAX);
    let (rs, cs) = (c.rs, c.cs);
    let out = SharedOut(c.data.as_mut_ptr());
    let out = &out;
    let blocks = n.div_ceil(nc);
    let block = |buf: &mut Vec<f32>, bi: usize| {
        let j0 = bi * nc;
        let ncb = nc.min(n - j0);
        let panels = ncb.div_ceil(NR);
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            b.pack_block(k0, kc, j0, ncb, &mut buf[..panels * kc * NR]);
            for p in 0..m.div_ceil(MR) {
                let a_panel = &a_packed[(p * k + k0) * MR..][..kc * MR];
                let rows = MR.min(m - p * MR);
                for q in 0..panels {
                    let acc = kernel(kc, a_panel, &buf[q * kc * NR..][..kc * NR]);
                    let cols = NR.min(ncb - q * NR);
                    for (i, acc_row) in acc.iter().enumerate().take(rows) {
                        let row = p * MR + i;
                        let base = row * rs + (j0 + q * NR) * cs;
                        let add = if k0 == 0 {
                            bias.map_or(0.0, |b| b[row])
                        } else {
                            0.0
                        };
                        if cs == 1 {
                            // SAFETY: base + cols - 1 < c.data.len() (asserted above for the
                            // largest (i, j)), and columns j0 + q*NR .. + cols belong to
                            // this task's block [j0, j0 + ncb): no other task touches them.
                            let dst =
                                unsafe { std::slice::from_raw_parts_mut(out.0.add(base), cols) };
                            if k0 == 0 {
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
                        for (jj, &v) in acc_row.iter().enumerate().take(cols) {
                            // SAFETY: as above, with column stride cs.
                            unsafe {
                                let dst = out.0.add(base + jj * cs);
                                *dst = if k0 == 0 { v + add } else { *dst + v };
                            }
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_and_selected_micro_kernels_agree() {
        let kc = 37;
        let a: Vec<f32> = (0..kc * MR).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..kc * NR).map(|i| ((i * 5) % 11) as f32 * 0.25).collect();
        let want = micro_portable(kc, &a, &b);
        assert_eq!(micro_kernel()(kc, &a, &b), want, "{}", kernel_isa());
        for i in 0..MR {
            for j in 0..NR {
                let dot: f32 = (0..kc).map(|k| a[k * MR + i] * b[k * NR + j]).sum();
                assert!((want[i][j] - dot).abs() < 1e-3);
            }
        }
    }
}
