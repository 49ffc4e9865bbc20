//! Measures this machine's single-precision FMA peak: each thread runs a loop of independent
//! 8-lane AVX2 FMAs (enough accumulators to hide the FMA latency) for about a second.
//!
//!     cargo run --release -p rbln-npu --example fma_peak -- [THREADS]
//!
//! Prints GFLOP/s per thread count from 1 to THREADS (default: all cores), counting an FMA as 2
//! FLOPs per lane. BENCHMARKS.md divides the direct-convolution work of a model by this peak.

use std::time::Instant;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
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

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("this CPU has no AVX2+FMA");
            std::process::exit(1);
        }
        let max = std::env::args()
            .nth(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let iters: u64 = 200_000_000;
        for threads in 1..=max {
            let start = Instant::now();
            let handles: Vec<_> = (0..threads)
                // SAFETY: AVX2 and FMA were detected above.
                .map(|_| std::thread::spawn(move || unsafe { fma_loop(iters) }))
                .collect();
            let sink: f32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            let secs = start.elapsed().as_secs_f64();
            let flops = threads as f64 * iters as f64 * 12.0 * 8.0 * 2.0;
            println!(
                "{threads} thread(s): {:.1} GFLOP/s ({secs:.2} s; checksum {sink:.3})",
                flops / secs / 1e9
            );
        }
    }
}
