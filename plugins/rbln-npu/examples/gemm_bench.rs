//! Times the im2col GEMM path on the convolution and linear shapes of the SD VAE that do not
//! use Winograd: 1x1 shortcuts, stride-2 downsampling, the 3-channel `conv_in`, the attention
//! projections. Prints the best of RUNS (default 5) per shape, in GFLOP/s.
//!
//!     cargo run --release -p rbln-npu --example gemm_bench -- [RUNS] [THREADS]

use rbln_npu::kernels::conv::{conv2d_packed, ConvGeom};
use rbln_npu::kernels::gemm::pack_a;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let runs = args.first().copied().unwrap_or(5);
    if let Some(&t) = args.get(1) {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .expect("one pool");
    }
    let cases = [
        (
            "1x1 shortcut 256->512 @64x64",
            [1, 256, 64, 64],
            512,
            1,
            1,
            [0, 0, 0, 0],
        ),
        (
            "1x1 linear 512->512 @32x32",
            [1, 512, 32, 32],
            512,
            1,
            1,
            [0, 0, 0, 0],
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
            [1, 1, 1, 1],
        ),
        (
            "3x3 conv_out 128->3 @256",
            [1, 128, 256, 256],
            3,
            3,
            1,
            [1, 1, 1, 1],
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
        let mut out = vec![0.0f32; o.iter().product()];
        let flops = 2.0 * (c_out * g.depth() * o[2] * o[3]) as f64;
        let mut best = f64::MAX;
        for _ in 0..runs + 1 {
            let t = Instant::now();
            conv2d_packed(&g, &x, &wp, Some(&bias), &mut out);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{name:32} {:8.2} ms {:7.1} GFLOP/s",
            best * 1e3,
            flops / best / 1e9
        );
    }
}
