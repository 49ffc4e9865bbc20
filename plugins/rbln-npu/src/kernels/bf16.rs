//! Bfloat16 GEMM inputs with f32 accumulation: `C = bf16(A) x bf16(B)`, the building block of
//! an opt-in bfloat16 mode (not wired to a compiler option yet).
//!
//! A bfloat16 is the upper half of an f32; [`to_bf16`] rounds to nearest even. Both operands are
//! packed in pairs of consecutive depths, one pair per 32-bit word (the lower depth in the low
//! half), which is what AVX512_BF16's `vdpbf16ps` multiplies: per f32 lane,
//! `acc += a[2 d] b[2 d] + a[2 d + 1] b[2 d + 1]`. Layouts (`kp = ceil(k / 2)` pairs, a missing
//! last depth is zero):
//! - `A` (`m x k`, weights, packed once by [`pack_a`]): panels of [`MR`] rows, word
//!   `(p * kp + d) * MR + i` for row `p * MR + i` and pair `d`;
//! - `B` (`k x n`, row-major f32, packed per block while the GEMM runs): panels of [`NR`]
//!   columns, word `d * NR + j`.
//!
//! With AVX512_BF16 (on the `avx512` path) the micro-kernel is a 12x32 tile of `vdpbf16ps`;
//! elsewhere the bf16 values are converted back to f32 exactly and multiplied by the path's f32
//! GEMM, so the mode is correct on every CPU and fast where the CPU helps.

use super::gemm::{MR, NR};
use super::isa::{self, Path};
use super::SharedOut;
use rayon::prelude::*;

/// Depth pairs in one k block.
const KP: usize = 128;
/// Widest column block handled by one task.
const NC_MAX: usize = 256;

/// `x` rounded to the nearest bfloat16 (ties to even); NaN stays NaN.
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The f32 value of bfloat16 `h` (exact).
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Two bfloat16 values in one word: `lo` in the low half.
fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16
}

/// Words of `A` (`m x k`) packed by [`pack_a`].
pub fn packed_a_len(m: usize, k: usize) -> usize {
    m.div_ceil(MR) * MR * k.div_ceil(2)
}

/// Packs row-major `a` (`m x k`) as bfloat16 pairs in panels of [`MR`] rows (see the module
/// docs). Rows past `m` and the depth past `k` are zero.
pub fn pack_a(a: &[f32], m: usize, k: usize) -> Vec<u32> {
    assert_eq!(a.len(), m * k, "bf16 pack_a: matrix length");
    let kp = k.div_ceil(2);
    let mut dst = vec![0u32; packed_a_len(m, k)];
    for r in 0..m {
        let (p, i) = (r / MR, r % MR);
        let row = &a[r * k..(r + 1) * k];
        for d in 0..kp {
            let hi = row.get(2 * d + 1).copied().unwrap_or(0.0);
            dst[(p * kp + d) * MR + i] = pair(row[2 * d], hi);
        }
    }
    dst
}

/// Packs depths `2 d0 .. 2 (d0 + dc)` of columns `j0 .. j0 + width` of row-major `b` (`k x n`,
/// row stride `n`) as one `B` panel of `dc` pairs; columns past `width` and depths past `k` are
/// zero.
fn pack_b_panel(
    b: &[f32],
    (k, n): (usize, usize),
    (d0, dc): (usize, usize),
    (j0, width): (usize, usize),
    dst: &mut [u32],
) {
    for d in 0..dc {
        let (k_lo, k_hi) = (2 * (d0 + d), 2 * (d0 + d) + 1);
        let row = &mut dst[d * NR..(d + 1) * NR];
        for (j, w) in row.iter_mut().enumerate() {
            *w = if j < width {
                let lo = b[k_lo * n + j0 + j];
                let hi = if k_hi < k { b[k_hi * n + j0 + j] } else { 0.0 };
                pair(lo, hi)
            } else {
                0
            };
        }
    }
}

/// One `MR x NR` block of accumulators.
type Block = [[f32; NR]; MR];

/// The `vdpbf16ps` register tile: `RA` `A` panels times `RB` `B` panels, one pair of depths
/// per step.
///
/// # Safety
/// The CPU must have AVX-512F and AVX512_BF16; `a[r]` must point to `dc * MR` words and `b[j]`
/// to `dc * NR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_bf16<const RA: usize, const RB: usize>(
    dc: usize,
    a: [*const u32; RA],
    b: [*const u32; RB],
    out: &mut [Block],
) {
    use std::arch::x86_64::*;
    const { assert!(NR == 16) };
    let mut c = [[[_mm512_setzero_ps(); RB]; MR]; RA];
    for d in 0..dc {
        // SAFETY: d < dc, and the caller guarantees dc * NR words behind every b[j] and
        // dc * MR behind every a[r]. __m512i and __m512bh are both 64-byte vectors.
        unsafe {
            let mut bv = [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); RB];
            for (v, p) in bv.iter_mut().zip(b) {
                *v = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    p.add(d * NR).cast(),
                ));
            }
            for (cr, p) in c.iter_mut().zip(a) {
                for (i, ci) in cr.iter_mut().enumerate() {
                    let x = _mm512_set1_epi32(*p.add(d * MR + i) as i32);
                    let x = std::mem::transmute::<__m512i, __m512bh>(x);
                    for (acc, &bj) in ci.iter_mut().zip(&bv) {
                        *acc = _mm512_dpbf16_ps(*acc, x, bj);
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

/// [`tile_bf16`] for 1 or 2 panels of each operand.
#[cfg(target_arch = "x86_64")]
fn micro_bf16(dc: usize, a: &[&[u32]], b: &[&[u32]], out: &mut [Block]) {
    assert!(
        a.iter().all(|p| p.len() >= dc * MR)
            && b.iter().all(|p| p.len() >= dc * NR)
            && out.len() >= a.len() * b.len(),
        "bf16 micro-kernel: panel lengths"
    );
    let pa = |r: usize| a[r].as_ptr();
    let pb = |j: usize| b[j].as_ptr();
    // SAFETY: `Kernel::of` selects this entry only when the CPU has AVX-512F and AVX512_BF16;
    // the panel lengths were checked above.
    unsafe {
        match (a.len(), b.len()) {
            (2, 2) => tile_bf16::<2, 2>(dc, [pa(0), pa(1)], [pb(0), pb(1)], out),
            (2, 1) => tile_bf16::<2, 1>(dc, [pa(0), pa(1)], [pb(0)], out),
            (1, 2) => tile_bf16::<1, 2>(dc, [pa(0)], [pb(0), pb(1)], out),
            (1, 1) => tile_bf16::<1, 1>(dc, [pa(0)], [pb(0)], out),
            other => unreachable!("bf16 micro-kernel: {other:?} panels"),
        }
    }
}

/// Whether this path multiplies bf16 in hardware (`vdpbf16ps`) rather than by conversion.
pub fn native(path: Path) -> bool {
    isa::bf16_dot(path)
}

/// `C[m x n] = bf16(A)[m x k] x bf16(B)[k x n]` with f32 accumulation, `A` packed by
/// [`pack_a`], `b` and `c` row-major (`k x n`, `m x n`). Column blocks run in parallel.
pub fn gemm(m: usize, n: usize, k: usize, a_packed: &[u32], b: &[f32], c: &mut [f32]) {
    assert!(
        a_packed.len() >= packed_a_len(m, k),
        "bf16 gemm: packed A too short"
    );
    assert_eq!(b.len(), k * n, "bf16 gemm: B length");
    assert_eq!(c.len(), m * n, "bf16 gemm: C length");
    if m == 0 || n == 0 {
        return;
    }
    let kp = k.div_ceil(2);
    if kp == 0 {
        c.fill(0.0);
        return;
    }
    let path = isa::path();
    #[cfg(target_arch = "x86_64")]
    if native(path) {
        return gemm_native(m, n, k, a_packed, b, c);
    }
    gemm_converted(m, n, k, a_packed, b, c)
}

/// [`gemm`] without `vdpbf16ps`: both operands converted back to f32 (exactly) and multiplied
/// by the f32 GEMM of the current path (over `2 kp` depths; a missing last depth is zero).
fn gemm_converted(m: usize, n: usize, k: usize, a_packed: &[u32], b: &[f32], c: &mut [f32]) {
    let kp = k.div_ceil(2);
    let a: Vec<f32> = a_packed[..packed_a_len(m, k)]
        .chunks_exact(MR * kp)
        .flat_map(|panel| {
            (0..2 * kp).flat_map(move |kk| {
                let (d, half) = (kk / 2, 16 * (kk % 2) as u32);
                panel[d * MR..(d + 1) * MR]
                    .iter()
                    .map(move |&w| from_bf16((w >> half) as u16))
            })
        })
        .collect();
    let mut br: Vec<f32> = b.iter().map(|&x| from_bf16(to_bf16(x))).collect();
    br.resize(2 * kp * n, 0.0);
    let src = super::gemm::RowMajorB { data: &br, ld: n };
    let out = super::gemm::COut {
        data: c,
        rs: n,
        cs: 1,
    };
    super::gemm::gemm(m, n, 2 * kp, &a, &src, None, out);
}

/// [`gemm`] with the `vdpbf16ps` micro-kernel.
#[cfg(target_arch = "x86_64")]
fn gemm_native(m: usize, n: usize, k: usize, a_packed: &[u32], b: &[f32], c: &mut [f32]) {
    let kp = k.div_ceil(2);
    let (micro, rab) = (micro_bf16, 2);
    let a_panels = m.div_ceil(MR);
    let nc = n
        .div_ceil(4 * rayon::current_num_threads())
        .next_multiple_of(NR * rab)
        .clamp(NR, NC_MAX);
    let out = SharedOut(c.as_mut_ptr());
    let out = &out;
    (0..n.div_ceil(nc)).into_par_iter().for_each_init(
        || vec![0u32; KP * nc],
        |buf, bi| {
            let j0 = bi * nc;
            let ncb = nc.min(n - j0);
            let panels = ncb.div_ceil(NR);
            let mut acc = [[[0.0f32; NR]; MR]; 4];
            for d0 in (0..kp).step_by(KP) {
                let dc = KP.min(kp - d0);
                for q in 0..panels {
                    let width = NR.min(ncb - q * NR);
                    let dst = &mut buf[q * dc * NR..][..dc * NR];
                    pack_b_panel(b, (k, n), (d0, dc), (j0 + q * NR, width), dst);
                }
                for p0 in (0..a_panels).step_by(rab) {
                    let na = rab.min(a_panels - p0);
                    let a: [&[u32]; 2] = std::array::from_fn(|r| {
                        let p = (p0 + r).min(a_panels - 1);
                        &a_packed[(p * kp + d0) * MR..][..dc * MR]
                    });
                    for q0 in (0..panels).step_by(rab) {
                        let nb = rab.min(panels - q0);
                        let bp: [&[u32]; 2] = std::array::from_fn(|j| {
                            let q = (q0 + j).min(panels - 1);
                            &buf[q * dc * NR..][..dc * NR]
                        });
                        micro(dc, &a[..na], &bp[..nb], &mut acc[..na * nb]);
                        for (t, blk) in acc[..na * nb].iter().enumerate() {
                            let (p, q) = (p0 + t / nb, q0 + t % nb);
                            let cols = NR.min(ncb - q * NR);
                            for (i, row) in blk.iter().enumerate().take(MR.min(m - p * MR)) {
                                let at = (p * MR + i) * n + j0 + q * NR;
                                // SAFETY: at + cols <= m * n = c.len(), and columns
                                // j0 .. j0 + ncb belong to this task's block only.
                                let dst =
                                    unsafe { std::slice::from_raw_parts_mut(out.0.add(at), cols) };
                                if d0 == 0 {
                                    dst.copy_from_slice(&row[..cols]);
                                } else {
                                    for (d, &v) in dst.iter_mut().zip(row) {
                                        *d += v;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::Isa;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(1.0 + 1.5 / 256.0), 0x3f81);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    /// Every path against a plain f64 product of the bf16-rounded inputs, on odd shapes (odd
    /// depths, rows and columns off the tiles, depths past one k block).
    #[test]
    fn gemm_matches_the_product_of_rounded_inputs() {
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        let round =
            |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| from_bf16(to_bf16(x)) as f64).collect() };
        for isa in Isa::ALL {
            let Ok(path) = isa.check() else {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "bf16 gemm: SKIPPED the {isa} path ({})",
                    isa.features()
                );
                continue;
            };
            let native = native(path);
            for (m, k, n) in [
                (1, 1, 1),
                (7, 5, 37),
                (13, 301, 33),
                (12, 64, 32),
                (25, 300, 97),
            ] {
                let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let b: Vec<f32> = (0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let (ar, br) = (round(&a), round(&b));
                let ap = pack_a(&a, m, k);
                let mut c = vec![f32::NAN; m * n];
                isa::with_path(path, || gemm(m, n, k, &ap, &b, &mut c));
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k).map(|d| ar[i * k + d] * br[d * n + j]).sum();
                        let got = c[i * n + j] as f64;
                        // f32 accumulation of k products of magnitude <= 1.
                        let tol = 1e-6 * (k as f64) + 1e-6;
                        assert!(
                            (got - want).abs() <= tol,
                            "{isa} (native {native}) {m}x{k}x{n} ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
