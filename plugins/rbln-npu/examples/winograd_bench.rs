//! Times the Winograd F(4x4,3x3) convolution on the SD VAE's 3x3 layer shapes (including the
//! per-call filter transform). Prints the best of RUNS (default 10) per shape, in effective
//! (direct-convolution) GFLOP/s, and the best time of the filter transform alone.
//!
//!     cargo run --release -p rbln-npu --example winograd_bench -- [RUNS] [THREADS]

use rbln_npu::kernels::conv::ConvGeom;
use rbln_npu::kernels::winograd;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let runs = args.first().copied().unwrap_or(10);
    if let Some(&t) = args.get(1) {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .expect("one pool");
    }
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
        let (mut best, mut filters) = (f64::MAX, f64::MAX);
        for _ in 0..runs {
            let t = Instant::now();
            winograd::transform_filters(&taps, c, c, &mut u);
            let f = t.elapsed().as_secs_f64();
            winograd::conv3x3(&g, &x, false, &u, Some(&bias), None, &mut out);
            best = best.min(t.elapsed().as_secs_f64());
            filters = filters.min(f);
        }
        println!(
            "{c:4} ch @{hw:3} {:8.2} ms {:7.1} GFLOP/s, of which the filter transform {:6.2} ms",
            best * 1e3,
            flops / best / 1e9,
            filters * 1e3
        );
    }
}
