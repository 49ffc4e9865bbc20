//! Times the im2col GEMM path on the convolution and linear shapes of the SD VAE that do not
//! use Winograd (1x1 shortcuts, stride-2 downsampling, the 3-channel `conv_in`, the attention
//! projections) on every kernel path this CPU has, the paths alternating run by run, so that a
//! noisy machine slows them alike. Then compares our GEMM with the `gemm` crate (its runtime
//! dispatch, AVX-512 included) and `matrixmultiply` (the one ndarray uses) on plain matrices of
//! the 1x1-convolution shapes (all threads) and of the Winograd point products (one thread, as
//! each Winograd chunk runs), A packed ahead of time for us, and, on the former, our GEMM with
//! bfloat16 inputs (`kernels::bf16`). Prints medians of RUNS (default 5)
//! in GFLOP/s, and each path's ratio to the first.
//!
//!     cargo run --release -p rbln-npu --example gemm_bench -- [RUNS] [THREADS]

use rbln_npu::kernels::bf16;
use rbln_npu::kernels::conv::{conv2d_packed, ConvGeom};
use rbln_npu::kernels::gemm::{gemm, gemm_serial, pack_a, COut, RowMajorB};
use rbln_npu::kernels::isa::{self, Isa, Path};
use std::time::Instant;

/// Median of `v` (not empty).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Seconds of one call of `f`.
fn time(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// A labelled benchmark body.
type Contender<'a> = (String, Box<dyn FnMut() + 'a>);

/// Times each of `contenders` `runs` times (after one warm-up round), round-robin, and prints
/// their median GFLOP/s for `flops` floating-point operations per call.
fn race(name: &str, flops: f64, runs: usize, contenders: &mut [Contender<'_>]) {
    let mut times = vec![Vec::new(); contenders.len()];
    for round in 0..=runs {
        for (t, (_, f)) in times.iter_mut().zip(contenders.iter_mut()) {
            let s = time(f);
            if round > 0 {
                t.push(s);
            }
        }
    }
    let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    let parts: Vec<String> = contenders
        .iter()
        .zip(&medians)
        .map(|((label, _), &m)| {
            format!(
                "{label} {:7.2} ms {:6.1} GFLOP/s ({:.2}x)",
                m * 1e3,
                flops / m / 1e9,
                medians[0] / m
            )
        })
        .collect();
    println!("{name:34} {}", parts.join(" | "));
}

/// The SIMD paths this CPU has, AVX2 first (the baseline of the ratios); portable if none.
fn paths() -> Vec<Path> {
    let v: Vec<Path> = [Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter_map(|i| match i.check() {
            Ok(p) => Some(p),
            Err(e) => {
                println!("skipped: {e}");
                None
            }
        })
        .collect();
    if v.is_empty() {
        return vec![isa::best()];
    }
    v
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let runs = args.first().copied().unwrap_or(5).max(1);
    if let Some(&t) = args.get(1) {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .expect("one pool");
    }
    let threads = rayon::current_num_threads();
    let paths = paths();
    println!("{threads} threads, medians of {runs} runs; ratios to the first column");
    let cases = [
        (
            "1x1 shortcut 256->512 @64x64",
            [1, 256, 64, 64],
            512,
            1,
            1,
            [0; 4],
        ),
        (
            "1x1 linear 512->512 @32x32",
            [1, 512, 32, 32],
            512,
            1,
            1,
            [0; 4],
        ),
        (
            "3x3/2 down 128 @256",
            [1, 128, 256, 256],
            128,
            3,
            2,
            [0, 0, 1, 1],
        ),
        (
            "3x3/2 down 256 @128",
            [1, 256, 128, 128],
            256,
            3,
            2,
            [0, 0, 1, 1],
        ),
        (
            "3x3/2 down 512 @64",
            [1, 512, 64, 64],
            512,
            3,
            2,
            [0, 0, 1, 1],
        ),
        (
            "3x3 conv_in 3->128 @256",
            [1, 3, 256, 256],
            128,
            3,
            1,
            [1; 4],
        ),
        (
            "3x3 conv_out 128->3 @256",
            [1, 128, 256, 256],
            3,
            3,
            1,
            [1; 4],
        ),
    ];
    for (name, input, c_out, k, s, padding) in cases {
        let g = ConvGeom {
            input,
            c_out,
            kernel: [k, k],
            stride: [s, s],
            padding,
        };
        let x: Vec<f32> = (0..input.iter().product::<usize>())
            .map(|i| (i % 17) as f32 * 0.1)
            .collect();
        let w: Vec<f32> = (0..c_out * g.depth())
            .map(|i| (i % 13) as f32 * 0.01)
            .collect();
        let bias = vec![0.5f32; c_out];
        let wp = pack_a(&w, c_out, g.depth());
        let o = g.output();
        let flops = 2.0 * (c_out * g.depth() * o[2] * o[3]) as f64;
        let outs: Vec<std::cell::RefCell<Vec<f32>>> = paths
            .iter()
            .map(|_| vec![0.0f32; o.iter().product()].into())
            .collect();
        let mut contenders: Vec<Contender<'_>> = paths
            .iter()
            .zip(&outs)
            .map(|(&p, out)| {
                let (g, x, wp, bias) = (&g, &x, &wp, &bias);
                let f: Box<dyn FnMut() + '_> = Box::new(move || {
                    isa::with_path(p, || {
                        conv2d_packed(g, x, wp, Some(bias), &mut out.borrow_mut())
                    })
                });
                (p.isa().to_string(), f)
            })
            .collect();
        race(name, flops, runs, &mut contenders);
    }
    // matrixmultiply's `threading` feature reads its thread count from this variable.
    std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
    let plain = [
        (512, 4096, 256, true),
        (512, 1024, 512, true),
        (128, 16384, 256, true),
        (256, 16384, 512, true),
        // One Winograd point product of a chunk: C_out x C_in times C_in x chunk tiles.
        (512, 128, 512, false),
        (256, 128, 256, false),
        (128, 32, 128, false),
    ];
    for (m, n, k, parallel) in plain {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 17) as f32 * 0.1).collect();
        let ap = pack_a(&a, m, k);
        let ap16 = bf16::pack_a(&a, m, k);
        let flops = 2.0 * (m * n * k) as f64;
        let c = std::cell::RefCell::new(vec![0.0f32; m * n]);
        let (a, b, ap, ap16, c) = (&a, &b, &ap, &ap16, &c);
        let mut contenders: Vec<Contender<'_>> = Vec::new();
        for &p in &paths {
            let f: Box<dyn FnMut() + '_> = Box::new(move || {
                let mut c = c.borrow_mut();
                let out = COut {
                    data: &mut c,
                    rs: n,
                    cs: 1,
                };
                let src = RowMajorB { data: b, ld: n };
                isa::with_path(p, || match parallel {
                    true => gemm(m, n, k, ap, &src, None, out),
                    false => gemm_serial(m, n, k, ap, &src, None, out),
                })
            });
            contenders.push((format!("ours {}", p.isa()), f));
        }
        contenders.push((
            "gemm crate".into(),
            Box::new(move || {
                let mut c = c.borrow_mut();
                let par = match parallel {
                    true => gemm::Parallelism::Rayon(threads),
                    false => gemm::Parallelism::None,
                };
                // SAFETY: a is m x k, b is k x n, c is m x n, all row-major with these strides.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    )
                }
            }),
        ));
        if parallel {
            for &p in &paths {
                let label = match bf16::native(p) {
                    true => format!("bf16 {} (vdpbf16ps)", p.isa()),
                    false => format!("bf16 {} (converted)", p.isa()),
                };
                let f: Box<dyn FnMut() + '_> = Box::new(move || {
                    isa::with_path(p, || bf16::gemm(m, n, k, ap16, b, &mut c.borrow_mut()))
                });
                contenders.push((label, f));
            }
            contenders.push((
                "matrixmultiply".into(),
                Box::new(move || {
                    let mut c = c.borrow_mut();
                    // SAFETY: as above.
                    unsafe {
                        matrixmultiply::sgemm(
                            m,
                            k,
                            n,
                            1.0,
                            a.as_ptr(),
                            k as isize,
                            1,
                            b.as_ptr(),
                            n as isize,
                            1,
                            0.0,
                            c.as_mut_ptr(),
                            n as isize,
                            1,
                        );
                    }
                }),
            ));
        }
        let what = if parallel { "all threads" } else { "1 thread" };
        race(
            &format!("gemm {m}x{n}x{k} ({what})"),
            flops,
            runs,
            &mut contenders,
        );
    }
}
