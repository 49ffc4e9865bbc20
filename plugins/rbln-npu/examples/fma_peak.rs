//! Measures this machine's single-precision FMA peak with the widest FMA it has: 16-lane
//! AVX-512F when present, else 8-lane AVX2+FMA. Each thread runs a loop of independent FMAs
//! (enough accumulators to hide the FMA latency) for about a second; with AVX-512 the 8-lane
//! figure is measured too, for comparison.
//!
//!     cargo run --release -p rbln-npu --example fma_peak -- [THREADS]
//!
//! Prints GFLOP/s per width and thread count from 1 to THREADS (default: all cores), counting an
//! FMA as 2 FLOPs per lane; the last line is the widest FMA on THREADS threads.
//! BENCHMARKS.md divides the direct-convolution work of a model by this peak.

use std::time::Instant;

/// One FMA width: its name, lanes, loop iterations and the loop.
type Width = (&'static str, usize, u64, fn(u64) -> f32);

/// Independent accumulator chains per thread.
const CHAINS: usize = 12;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_256(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); CHAINS];
    for _ in 0..iters {
        for c in acc.iter_mut() {
            *c = _mm256_fmadd_ps(*c, a, b);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for c in acc {
        sum = _mm256_add_ps(sum, c);
    }
    let mut out = [0f32; 8];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
    out.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop_512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); CHAINS];
    for _ in 0..iters {
        for c in acc.iter_mut() {
            *c = _mm512_fmadd_ps(*c, a, b);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for c in acc {
        sum = _mm512_add_ps(sum, c);
    }
    _mm512_reduce_add_ps(sum)
}

/// GFLOP/s of `threads` threads each running `run(iters)` with `lanes`-wide FMAs.
fn measure(threads: usize, lanes: usize, iters: u64, run: fn(u64) -> f32) -> (f64, f64, f32) {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || run(iters)))
        .collect();
    let sink: f32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let secs = start.elapsed().as_secs_f64();
    let flops = threads as f64 * iters as f64 * (CHAINS * lanes * 2) as f64;
    (flops / secs / 1e9, secs, sink)
}

#[cfg(target_arch = "x86_64")]
fn main() {
    // The entries check the features they need before running the loops.
    fn run_256(iters: u64) -> f32 {
        assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
        // SAFETY: AVX2 and FMA were detected just above.
        unsafe { fma_loop_256(iters) }
    }
    fn run_512(iters: u64) -> f32 {
        assert!(is_x86_feature_detected!("avx512f"));
        // SAFETY: AVX-512F was detected just above.
        unsafe { fma_loop_512(iters) }
    }
    let has_256 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    let has_512 = is_x86_feature_detected!("avx512f");
    if !has_256 {
        eprintln!("this CPU has no AVX2+FMA");
        std::process::exit(1);
    }
    let max = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let iters: u64 = 200_000_000;
    // Narrower first, so that the last line is the widest FMA on the most threads.
    let mut widths: Vec<Width> = vec![("256-bit AVX2+FMA", 8, iters, run_256)];
    if has_512 {
        widths.push(("512-bit AVX-512F", 16, iters / 2, run_512));
    }
    for (name, lanes, iters, run) in widths {
        for threads in 1..=max {
            let (gflops, secs, sink) = measure(threads, lanes, iters, run);
            println!(
                "{name}, {threads} thread(s): {gflops:.1} GFLOP/s ({secs:.2} s; checksum {sink:.3})"
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("fma_peak measures x86-64 FMAs only");
    std::process::exit(1);
}
