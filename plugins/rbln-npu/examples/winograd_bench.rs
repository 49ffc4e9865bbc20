//! Times the Winograd F(4x4,3x3) convolution on the SD VAE's 3x3 layer shapes (including the
//! per-call filter transform) on every SIMD kernel path this CPU has, the paths alternating run
//! by run so that a noisy machine slows them alike. Prints the median of RUNS (default 10) per
//! shape and path, in effective (direct-convolution) GFLOP/s, the median of the filter
//! transform alone, and each path's ratio to AVX2.
//!
//!     cargo run --release -p rbln-npu --example winograd_bench -- [RUNS] [THREADS]

use rbln_npu::kernels::conv::ConvGeom;
use rbln_npu::kernels::isa::{self, Isa, Path};
use rbln_npu::kernels::winograd;
use std::time::Instant;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let runs = args.first().copied().unwrap_or(10).max(1);
    if let Some(&t) = args.get(1) {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .expect("one pool");
    }
    let mut paths: Vec<Path> = [Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter_map(|i| i.check().map_err(|e| println!("skipped: {e}")).ok())
        .collect();
    if paths.is_empty() {
        paths.push(isa::best());
    }
    println!(
        "{} threads, medians of {runs} runs",
        rayon::current_num_threads()
    );
    for (c, hw) in [(128, 256), (256, 128), (512, 64), (512, 32)] {
        let g = ConvGeom {
            input: [1, c, hw, hw],
            c_out: c,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1, 1, 1],
        };
        let x: Vec<f32> = (0..c * hw * hw).map(|i| (i % 17) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..c * c * 9).map(|i| (i % 13) as f32 * 0.01).collect();
        let taps = winograd::pack_taps(&w, c, c);
        let mut u = vec![0.0f32; winograd::transformed_len(c, c)];
        let bias = vec![0.5f32; c];
        let mut out = vec![0.0f32; c * hw * hw];
        let flops = 2.0 * (c * c * 9 * hw * hw) as f64;
        let mut total = vec![Vec::new(); paths.len()];
        let mut filters = vec![Vec::new(); paths.len()];
        for round in 0..=runs {
            for (i, &p) in paths.iter().enumerate() {
                isa::with_path(p, || {
                    let t = Instant::now();
                    winograd::transform_filters(&taps, c, c, &mut u);
                    let f = t.elapsed().as_secs_f64();
                    winograd::conv3x3(&g, &x, false, &u, Some(&bias), None, &mut out);
                    if round > 0 {
                        total[i].push(t.elapsed().as_secs_f64());
                        filters[i].push(f);
                    }
                });
            }
        }
        let base = median(&mut total[0].clone());
        let parts: Vec<String> = paths
            .iter()
            .zip(total.iter_mut().zip(filters.iter_mut()))
            .map(|(p, (t, f))| {
                let (t, f) = (median(t), median(f));
                format!(
                    "{} {:8.2} ms {:6.1} GFLOP/s (filters {:5.2} ms; {:.2}x)",
                    p.isa(),
                    t * 1e3,
                    flops / t / 1e9,
                    f * 1e3,
                    base / t
                )
            })
            .collect();
        println!("{c:4} ch @{hw:3}  {}", parts.join(" | "));
    }
}
