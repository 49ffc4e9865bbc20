//! Times the im2col GEMM path on the convolution and linear shapes of the SD VAE that do not
//! use Winograd: 1x1 shortcuts, stride-2 downsampling, the 3-channel `conv_in`, the attention
//! projections. Prints the best of RUNS (default 5) per shape, in GFLOP/s. Then compares our
//! GEMM with the `matrixmultiply` crate (the one ndarray uses; its `threading` feature on) on
//! plain matrices of the 1x1-convolution shapes, both with A packed ahead of time for us.
//!
//!     cargo run --release -p rbln-npu --example gemm_bench -- [RUNS] [THREADS]

use rbln_npu::kernels::conv::{conv2d_packed, ConvGeom};
use rbln_npu::kernels::gemm::{gemm, pack_a, COut, RowMajorB};
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
    let threads = rayon::current_num_threads();
    // matrixmultiply's `threading` feature reads its thread count from this variable.
    std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
    for (m, n, k) in [
        (512, 4096, 256),
        (512, 1024, 512),
        (128, 16384, 256),
        (256, 16384, 512),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 17) as f32 * 0.1).collect();
        let ap = pack_a(&a, m, k);
        let mut c = vec![0.0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let (mut ours, mut theirs) = (f64::MAX, f64::MAX);
        for _ in 0..runs + 1 {
            let t = Instant::now();
            let out = COut {
                data: &mut c,
                rs: n,
                cs: 1,
            };
            gemm(m, n, k, &ap, &RowMajorB { data: &b, ld: n }, None, out);
            ours = ours.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            // SAFETY: a is m x k, b is k x n, c is m x n, all row-major with the given strides.
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
            theirs = theirs.min(t.elapsed().as_secs_f64());
        }
        println!(
            "gemm {m}x{n}x{k}: ours {:7.1} GFLOP/s, matrixmultiply {:7.1} GFLOP/s ({threads} threads)",
            flops / ours / 1e9,
            flops / theirs / 1e9
        );
    }
}
