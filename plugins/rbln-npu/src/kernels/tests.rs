//! Fast kernels against the scalar reference on odd shapes, with seeded random data, on every
//! instruction-set path this CPU has (a path it lacks is reported as skipped on stderr).

use super::conv::ConvGeom;
use super::isa::{Isa, Path};
use super::*;
use plugin_api::graph::Activation;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// Runs `f` with the kernels on each path this CPU has. A missing path is reported on stderr
/// (written past the test harness's capture, so that it is seen) and not run.
fn on_every_path(test: &str, f: impl Fn(Path)) {
    use std::io::Write;
    for isa in Isa::ALL {
        match isa.check() {
            Ok(path) => isa::with_path(path, || f(path)),
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "{test}: SKIPPED the {isa} path: {e}");
            }
        }
    }
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(1.0);
        assert!(err <= tol, "{what}: element {i}: got {g}, want {w}");
    }
}

#[test]
fn conv_matches_reference_on_odd_shapes() {
    on_every_path("conv", conv_cases);
}

fn conv_cases(path: Path) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let cases = [
        ([1, 3, 5, 7], 4, [3, 3], [2, 2], [0, 0, 1, 1]),
        ([2, 3, 5, 7], 5, [3, 3], [1, 1], [1, 1, 1, 1]),
        ([1, 7, 9, 4], 13, [1, 1], [1, 1], [0, 0, 0, 0]),
        ([1, 5, 6, 6], 3, [2, 3], [1, 2], [2, 0, 1, 3]),
        ([1, 40, 11, 13], 20, [3, 3], [1, 1], [1, 1, 1, 1]),
        // Output rows of 32 / 20 / 19 columns: panels within one row (the contiguous-copy
        // path, including left/right padding) and panels spanning two rows.
        ([1, 6, 18, 32], 7, [3, 3], [1, 1], [1, 1, 1, 1]),
        ([1, 4, 20, 40], 5, [3, 3], [2, 2], [0, 0, 1, 1]),
        ([2, 3, 17, 19], 4, [3, 3], [1, 1], [1, 1, 1, 1]),
        ([1, 2, 9, 34], 3, [3, 3], [1, 1], [0, 2, 1, 0]),
        // Blocks whose panels all lie in single output rows (packed row by row across the
        // panels), at stride 1 and 2, with depths past one k block (tap counting across it).
        ([1, 40, 6, 32], 9, [3, 3], [1, 1], [1, 1, 1, 1]),
        ([1, 30, 8, 64], 7, [3, 3], [2, 2], [0, 0, 1, 1]),
        ([2, 5, 9, 66], 4, [3, 3], [2, 2], [1, 1, 1, 1]),
    ];
    for (input, c_out, kernel, stride, padding) in cases {
        let g = ConvGeom {
            input,
            c_out,
            kernel,
            stride,
            padding,
        };
        let x = rand_vec(&mut rng, input.iter().product());
        let w = rand_vec(&mut rng, c_out * g.depth());
        let b = rand_vec(&mut rng, c_out);
        let want = reference::conv2d(&g, &x, &w, Some(&b));
        let mut got = vec![f32::NAN; want.len()];
        conv::conv2d(&g, &x, &w, Some(&b), &mut got);
        assert_close(&got, &want, 1e-5, &format!("{path:?} conv {g:?}"));
        let mut nobias = vec![f32::NAN; want.len()];
        conv::conv2d(&g, &x, &w, None, &mut nobias);
        let want = reference::conv2d(&g, &x, &w, None);
        assert_close(&nobias, &want, 1e-5, &format!("{path:?} conv without bias"));
    }
}

#[test]
fn gemm_crosses_k_blocks_and_ragged_edges() {
    on_every_path("gemm", |path| {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        // Rows and columns below, at and past the register tiles (6 or 12 rows, 16 or 32
        // columns), depths past one k block.
        for (m, k, n) in [
            (7, 600, 37),
            (1, 1, 1),
            (13, 257, 300),
            (6, 16, 16),
            (12, 32, 64),
            (19, 70, 97),
            (25, 513, 33),
            (5, 3, 17),
        ] {
            let a = rand_vec(&mut rng, m * k);
            let b = rand_vec(&mut rng, k * n);
            let want = reference::matmul(&a, &b, [1, m, k, n], false);
            let mut got = vec![f32::NAN; m * n];
            matmul::matmul(&a, &b, 1, m, k, n, false, &mut got);
            assert_close(&got, &want, 1e-5, &format!("{path:?} gemm {m}x{k}x{n}"));
        }
    });
}

#[test]
fn matmul_linear_softmax_match_reference() {
    on_every_path("matmul", matmul_cases);
}

fn matmul_cases(path: Path) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (batch, m, k, n) = (3, 5, 7, 9);
    let a = rand_vec(&mut rng, batch * m * k);
    let b = rand_vec(&mut rng, batch * k * n);
    for tb in [false, true] {
        let want = reference::matmul(&a, &b, [batch, m, k, n], tb);
        let mut got = vec![0.0; want.len()];
        matmul::matmul(&a, &b, batch, m, k, n, tb, &mut got);
        assert_close(&got, &want, 1e-5, &format!("{path:?} matmul"));
    }
    let (rows, k, n) = (11, 19, 5);
    let x = rand_vec(&mut rng, rows * k);
    let w = rand_vec(&mut rng, n * k);
    let bias = rand_vec(&mut rng, n);
    let want = reference::linear(&x, rows, k, &w, n, Some(&bias));
    let mut got = vec![0.0; want.len()];
    matmul::linear(&x, rows, k, &w, n, Some(&bias), &mut got);
    assert_close(&got, &want, 1e-5, &format!("{path:?} linear"));
    let mut x = rand_vec(&mut rng, 6 * 13);
    x[3] = 80.0; // would overflow exp without max subtraction
    let want = reference::softmax(&x, 13);
    let mut got = vec![0.0; x.len()];
    matmul::softmax(&x, 13, &mut got);
    assert_close(&got, &want, 1e-6, "softmax");
    assert!(got.iter().all(|v| v.is_finite()));
}

#[test]
fn group_norm_matches_reference_with_offset_data() {
    on_every_path("group_norm", |path| {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        // Small groups, and groups spanning several summation blocks with a ragged tail.
        for (n, c, s, groups) in [(2, 6, 35, 3), (1, 8, 1031, 2), (1, 3, 17, 1)] {
            let x: Vec<f32> = rand_vec(&mut rng, n * c * s)
                .iter()
                .map(|v| v * 3.0 + 50.0)
                .collect();
            let gamma = rand_vec(&mut rng, c);
            let beta = rand_vec(&mut rng, c);
            for act in [None, Some(Activation::Silu), Some(Activation::Gelu)] {
                let want = reference::group_norm(&x, [n, c, s], groups, 1e-6, &gamma, &beta, act);
                let mut got = vec![0.0; x.len()];
                norm::group_norm(&x, n, c, s, groups, 1e-6, &gamma, &beta, act, &mut got);
                assert_close(&got, &want, 2e-5, &format!("{path:?} group_norm {act:?}"));
            }
        }
    });
}

#[test]
fn eltwise_and_layout_match_reference() {
    on_every_path("eltwise", eltwise_cases);
}

fn eltwise_cases(path: Path) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x: Vec<f32> = rand_vec(&mut rng, 3 * 5 * 7)
        .iter()
        .map(|v| v * 6.0)
        .collect();
    let y = rand_vec(&mut rng, x.len());
    for kind in [
        Activation::Silu,
        Activation::Relu,
        Activation::Gelu,
        Activation::Mish,
    ] {
        let mut got = vec![0.0; x.len()];
        eltwise::activation(kind, &x, &mut got);
        // SiLU runs on the vectorized exp (a few ulp); the others are the reference itself.
        let tol = if kind == Activation::Silu { 1e-6 } else { 0.0 };
        let what = format!("{path:?} {kind:?}");
        assert_close(&got, &reference::activation(kind, &x), tol, &what);
    }
    let mut got = vec![0.0; x.len()];
    eltwise::add(&x, &y, &mut got);
    assert_close(&got, &reference::add(&x, &y), 0.0, "add");
    eltwise::scale(&x, 0.18215, &mut got);
    assert_close(&got, &reference::scale(&x, 0.18215), 0.0, "scale");

    let mut up = vec![0.0; 4 * x.len()];
    layout::upsample_nearest_2x(&x, 3, 5, 7, &mut up);
    assert_close(
        &up,
        &reference::upsample_nearest_2x(&x, 3, 5, 7),
        0.0,
        "upsample",
    );

    let shape = [3, 5, 7];
    for perm in [[0, 2, 1], [2, 0, 1], [1, 2, 0], [2, 1, 0]] {
        let mut got = vec![0.0; x.len()];
        layout::transpose(&x, &shape, &perm, &mut got);
        assert_close(
            &got,
            &reference::transpose(&x, &shape, &perm),
            0.0,
            "transpose",
        );
    }
    let mut got = vec![0.0; 3 * 2 * 7];
    layout::slice(&x, &shape, 1, 2, 4, &mut got);
    assert_close(&got, &reference::slice(&x, &shape, 1, 2, 4), 0.0, "slice");
}

/// The in-place variants give exactly the out-of-place results (both run the same bodies).
#[test]
fn in_place_kernels_equal_out_of_place() {
    on_every_path("in_place", in_place_cases);
}

fn in_place_cases(path: Path) {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for (n, c, s, groups) in [(2, 6, 35, 3), (1, 8, 1031, 2)] {
        let x: Vec<f32> = rand_vec(&mut rng, n * c * s)
            .iter()
            .map(|v| v * 3.0 + 50.0)
            .collect();
        let (gamma, beta) = (rand_vec(&mut rng, c), rand_vec(&mut rng, c));
        for act in [None, Some(Activation::Silu), Some(Activation::Gelu)] {
            let mut want = vec![0.0; x.len()];
            norm::group_norm(&x, n, c, s, groups, 1e-6, &gamma, &beta, act, &mut want);
            let mut got = x.clone();
            norm::group_norm_inplace(&mut got, n, c, s, groups, 1e-6, &gamma, &beta, act);
            assert_eq!(got, want, "{path:?} group_norm in place, {act:?}");
        }
    }
    // Longer than one parallel chunk, with a ragged tail.
    let len = (1 << 14) * 2 + 77;
    let x: Vec<f32> = rand_vec(&mut rng, len).iter().map(|v| v * 6.0).collect();
    let y = rand_vec(&mut rng, len);
    for kind in [
        Activation::Silu,
        Activation::Relu,
        Activation::Gelu,
        Activation::Mish,
    ] {
        let mut want = vec![0.0; len];
        eltwise::activation(kind, &x, &mut want);
        let mut got = x.clone();
        eltwise::activation_inplace(kind, &mut got);
        assert_eq!(got, want, "{path:?} {kind:?} in place");
    }
    let mut want = vec![0.0; len];
    eltwise::add(&x, &y, &mut want);
    for (acc, other) in [(&x, &y), (&y, &x)] {
        let mut got = acc.clone();
        eltwise::add_inplace(&mut got, other);
        assert_eq!(got, want, "add in place");
    }
    eltwise::scale(&x, 0.18215, &mut want);
    let mut got = x.clone();
    eltwise::scale_inplace(&mut got, 0.18215);
    assert_eq!(got, want, "scale in place");
}

#[test]
fn activations_agree_with_known_values() {
    // torch.nn.functional.gelu(torch.tensor([1.0, -0.5, 3.0], dtype=torch.float64))
    let gelu = [0.8413447460685429, -0.15426876936299347, 2.995950205708831];
    for (x, want) in [1.0f32, -0.5, 3.0].iter().zip(gelu) {
        let got = eltwise::activate(Activation::Gelu, *x) as f64;
        assert!((got - want).abs() < 1e-6, "gelu({x}) = {got}, want {want}");
    }
    assert!((eltwise::erf(0.5) - 0.5204998778130465).abs() < 1e-14);
    assert!((eltwise::erf(3.5) - 0.9999992569016276).abs() < 1e-14);
    assert!((eltwise::erf(-2.9999) - -eltwise::erf(3.0001)).abs() < 1e-7);
    // torch.nn.functional.mish(torch.tensor(1.0)) = 0.8650983882673103
    let got = eltwise::activate(Activation::Mish, 1.0) as f64;
    assert!((got - 0.8650983882673103).abs() < 1e-6);
    assert_eq!(eltwise::activate(Activation::Silu, 0.0), 0.0);
}

/// Throughput probe: `cargo test -p rbln-npu --release -- --ignored --nocapture conv_speed`.
#[test]
#[ignore]
fn conv_speed() {
    let g = ConvGeom {
        input: [1, 512, 64, 64],
        c_out: 512,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1, 1, 1],
    };
    let x = vec![0.5; 512 * 64 * 64];
    let w = gemm::pack_a(&vec![0.01; 512 * g.depth()], 512, g.depth());
    let mut out = vec![0.0; x.len()];
    let t = std::time::Instant::now();
    conv::conv2d_packed(&g, &x, &w, None, &mut out);
    let s = t.elapsed().as_secs_f64();
    let gflop = 2.0 * 512.0 * g.depth() as f64 * 4096.0 / 1e9;
    println!(
        "{} kernel: {gflop:.1} GFLOP in {s:.2}s = {:.1} GFLOP/s",
        isa::path().isa(),
        gflop / s
    );
}

#[test]
fn winograd_matches_reference_on_odd_shapes() {
    on_every_path("winograd", winograd_cases);
}

fn winograd_cases(path: Path) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let cases = [
        ([1, 3, 8, 8], 4, [1, 1, 1, 1]),
        ([2, 5, 7, 9], 7, [1, 1, 1, 1]),
        ([1, 4, 13, 6], 3, [0, 0, 0, 0]),
        ([1, 6, 10, 11], 13, [2, 0, 1, 3]),
        ([1, 1, 3, 3], 1, [0, 0, 0, 0]),
        ([3, 8, 21, 17], 9, [1, 1, 1, 1]),
        // Depth past one k block (KC = 256) and several chunks of tiles.
        ([1, 300, 12, 12], 14, [1, 1, 1, 1]),
        ([1, 16, 64, 48], 20, [1, 1, 1, 1]),
        // Rows of 32 tiles, all interior: panels of 16 tiles side by side (the row-run gather).
        ([1, 5, 10, 130], 3, [0, 0, 0, 0]),
        ([2, 4, 14, 136], 7, [1, 1, 1, 1]),
        // 25 output channels (four and a bit 6-row panels) and 52 tiles per row (panels of
        // 16 tiles and a ragged one): the edges of the wider register tiles.
        ([1, 9, 8, 208], 25, [1, 1, 1, 1]),
    ];
    for (input, c_out, padding) in cases {
        let g = ConvGeom {
            input,
            c_out,
            kernel: [3, 3],
            stride: [1, 1],
            padding,
        };
        let x = rand_vec(&mut rng, input.iter().product());
        let w = rand_vec(&mut rng, c_out * g.depth());
        let b = rand_vec(&mut rng, c_out);
        let taps = winograd::pack_taps(&w, c_out, input[1]);
        let mut u = vec![f32::NAN; winograd::transformed_len(c_out, input[1])];
        winograd::transform_filters(&taps, c_out, input[1], &mut u);
        for bias in [Some(b.as_slice()), None] {
            let want = reference::conv2d(&g, &x, &w, bias);
            let mut got = vec![f32::NAN; want.len()];
            winograd::conv3x3(&g, &x, false, &u, bias, None, &mut got);
            // Sums of up to 9 * 300 products of magnitude <= 1: allow for the transforms'
            // rounding relative to the size of the sums.
            let scale = (input[1] as f32 * 9.0).sqrt();
            assert_close(
                &got,
                &want,
                2e-5 * scale,
                &format!("{path:?} winograd {g:?}"),
            );
            // With a residual added in the epilogue.
            let res = rand_vec(&mut rng, want.len());
            winograd::conv3x3(&g, &x, false, &u, bias, Some(&res), &mut got);
            let want = reference::add(&want, &res);
            assert_close(
                &got,
                &want,
                2e-5 * scale,
                &format!("{path:?} winograd+residual {g:?}"),
            );
        }
    }
}

#[test]
fn fast_exp_is_within_a_few_ulp_over_its_range() {
    let mut worst = 0.0f64;
    let mut x = -87.0f32;
    while x <= 88.0 {
        let want = (x as f64).exp();
        let got = eltwise::exp_fast(x) as f64;
        worst = worst.max(((got - want) / want).abs());
        x += 0.0137;
    }
    assert!(worst < 5e-7, "worst relative error {worst:e}");
    // Clamped outside the range, never NaN or infinite.
    for x in [-1e4f32, -200.0, 200.0, 1e4] {
        let y = eltwise::exp_fast(x);
        assert!(y.is_finite() && y >= 0.0, "exp_fast({x}) = {y}");
        assert!(eltwise::silu_fast(x).is_finite());
    }
    assert_eq!(eltwise::silu_fast(0.0), 0.0);
}

#[test]
fn winograd_reads_through_a_folded_upsampling() {
    on_every_path("winograd_upsampled", winograd_upsampled_cases);
}

fn winograd_upsampled_cases(path: Path) {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // Low-resolution inputs; the convolution sees them upsampled 2x. Rows of 64 logical
    // columns give panels of 16 interior tiles (the row-run gather), the borders the rest.
    for (low, c_out, padding) in [
        ([1, 6, 5, 7], 5, [1, 1, 1, 1]),
        ([2, 3, 9, 40], 4, [1, 1, 1, 1]),
        ([1, 4, 6, 33], 3, [0, 0, 0, 0]),
    ] {
        let [n, c, h, w] = low;
        let x = rand_vec(&mut rng, n * c * h * w);
        let up = reference::upsample_nearest_2x(&x, n * c, h, w);
        let g = ConvGeom {
            input: [n, c, 2 * h, 2 * w],
            c_out,
            kernel: [3, 3],
            stride: [1, 1],
            padding,
        };
        let wt = rand_vec(&mut rng, c_out * g.depth());
        let b = rand_vec(&mut rng, c_out);
        let taps = winograd::pack_taps(&wt, c_out, c);
        let mut u = vec![0.0; winograd::transformed_len(c_out, c)];
        winograd::transform_filters(&taps, c_out, c, &mut u);
        let want = reference::conv2d(&g, &up, &wt, Some(&b));
        let mut got = vec![f32::NAN; want.len()];
        winograd::conv3x3(&g, &x, true, &u, Some(&b), None, &mut got);
        assert_close(
            &got,
            &want,
            2e-5 * (c as f32 * 9.0).sqrt(),
            &format!("{path:?} {low:?}"),
        );
    }
}

#[test]
fn attention_matches_softmax_of_products() {
    on_every_path("attention", |path| {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        // Query blocks of 64 rows and a ragged one, key counts off the 16-column panels.
        for [b, n, m, d, e] in [[1, 70, 37, 8, 5], [2, 13, 64, 16, 33], [1, 129, 3, 1, 2]] {
            let q = rand_vec(&mut rng, b * n * d);
            let k = rand_vec(&mut rng, b * m * d);
            let v = rand_vec(&mut rng, b * m * e);
            let scale = 1.0 / (d as f32).sqrt();
            let s = reference::scale(&reference::matmul(&q, &k, [b, n, d, m], true), scale);
            let want = reference::matmul(&reference::softmax(&s, m), &v, [b, n, m, e], false);
            let mut got = vec![f32::NAN; b * n * e];
            attention::attention(&q, &k, &v, [b, n, m, d, e], scale, &mut got);
            assert_close(
                &got,
                &want,
                1e-5,
                &format!("{path:?} attention {:?}", [b, n, m, d, e]),
            );
        }
    });
}
