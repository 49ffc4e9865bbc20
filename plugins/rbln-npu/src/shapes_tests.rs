//! Many shapes over one weight store: plans compiled for several input shapes (and derived on
//! first use) give what a separate compile for each shape gives, share their weights, and say
//! which shapes exist when given another; the format-version-3 reader.

use crate::compiler::compile_shapes;
use crate::{compile_graph, NpuExecutable};
use plugin_api::graph::{Activation, Graph, GraphBuilder};
use plugin_api::{NamedTensor, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// A VAE-like block at input `[b, 4, h, w]`: conv -> group norm + silu -> attention over the
/// flattened pixels (reshape, transpose, linear, matmul, softmax) -> unflatten -> residual add
/// -> 3x3 conv (Winograd when on).
fn block(b: usize, h: usize, w: usize) -> Graph {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut rv = |n: usize| {
        (0..n)
            .map(|_| rng.gen_range(-0.5f32..0.5))
            .collect::<Vec<_>>()
    };
    let mut g = GraphBuilder::new("block");
    let x = g.input("x", vec![b, 4, h, w]);
    let w1 = g.constant("conv1.weight", vec![8, 4, 3, 3], rv(8 * 4 * 9));
    let b1 = g.constant("conv1.bias", vec![8], rv(8));
    let gm = g.constant("norm.weight", vec![8], rv(8));
    let bt = g.constant("norm.bias", vec![8], rv(8));
    let wq = g.constant("q.weight", vec![8, 8], rv(64));
    let wv = g.constant("v.weight", vec![8, 8], rv(64));
    let w2 = g.constant("conv2.weight", vec![8, 8, 3, 3], rv(8 * 8 * 9));
    let c1 = g.conv2d("conv1", x, w1, Some(b1), [1, 1], [1, 1, 1, 1]);
    let n = g.group_norm("norm", c1, gm, bt, 2, 1e-6);
    let s = g.activation("act", n, Activation::Silu);
    let flat = g.reshape("flatten", s, vec![b, 8, h * w]);
    let t = g.transpose("tokens", flat, vec![0, 2, 1]);
    let q = g.linear("q", t, wq, None);
    let v = g.linear("v", t, wv, None);
    let sc = g.matmul("scores", q, q, true);
    let sc = g.scale("scaled", sc, 0.35);
    let pr = g.softmax("probs", sc);
    let at = g.matmul("attend", pr, v, false);
    let back = g.transpose("from_tokens", at, vec![0, 2, 1]);
    let un = g.reshape("unflatten", back, vec![b, 8, h, w]);
    let sum = g.add("residual", un, c1);
    let out = g.conv2d("conv2", sum, w2, None, [1, 1], [1, 1, 1, 1]);
    g.output("y", out);
    g.finish().unwrap()
}

fn input(shape: &[usize], seed: u64) -> Vec<NamedTensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    let data = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    vec![NamedTensor::new(
        "x",
        Tensor::new(shape.to_vec(), data).unwrap(),
    )]
}

fn close(a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(a.shape(), b.shape());
    let d = a
        .data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(d <= tol, "max difference {d} > {tol}");
}

/// Each shape of a multi-shape artifact (compiled, or derived on first use) against the graph
/// compiled for that shape alone: the same result to float rounding, Winograd off and on.
#[test]
fn every_plan_matches_its_own_compile() {
    let shapes = [(1, 8, 8), (1, 6, 10), (2, 4, 12), (1, 12, 4)];
    for winograd in [false, true] {
        let options = format!(r#"{{"winograd": {winograd}}}"#);
        let extra: Vec<Vec<Vec<usize>>> = shapes[1..3]
            .iter()
            .map(|&(b, h, w)| vec![vec![b, 4, h, w]])
            .collect();
        let (b, h, w) = shapes[0];
        let bytes = compile_shapes(block(b, h, w), &extra, &options, &|_, _, _| {}).unwrap();
        let exe = NpuExecutable::load(&bytes).unwrap();
        assert_eq!(exe.programs().count(), 3);
        let first = exe.program();
        for p in exe.programs() {
            for (a, b) in p.weights.iter().zip(&first.weights) {
                assert!(
                    Arc::ptr_eq(&a.data, &b.data),
                    "weight {} stored twice",
                    a.name
                );
            }
        }
        for (k, &(b, h, w)) in shapes.iter().enumerate() {
            let x = input(&[b, 4, h, w], k as u64);
            let alone = NpuExecutable::load(&compile_graph(block(b, h, w), &options).unwrap())
                .unwrap()
                .run(&x)
                .unwrap();
            let ours = if k < 3 {
                exe.run(&x).unwrap()
            } else {
                let e = exe.run(&x).unwrap_err();
                assert!(
                    e.message().contains("[1, 4, 12, 4]")
                        && e.message().contains("'x' [1, 4, 8, 8]")
                        && e.message().contains("'x' [2, 4, 4, 12]"),
                    "{e}"
                );
                exe.run_any(&x).unwrap()
            };
            close(&ours[0].tensor, &alone[0].tensor, 1e-4);
        }
    }
}

/// A shape given twice, and a shape the graph cannot take, are errors naming them.
#[test]
fn bad_shape_sets_are_errors() {
    let e =
        compile_shapes(block(1, 8, 8), &[vec![vec![1, 4, 8, 8]]], "", &|_, _, _| {}).unwrap_err();
    assert!(e.message().contains("twice"), "{e}");
    let e =
        compile_shapes(block(1, 8, 8), &[vec![vec![1, 3, 8, 8]]], "", &|_, _, _| {}).unwrap_err();
    assert!(e.message().contains("[1, 3, 8, 8]"), "{e}");
    let exe = NpuExecutable::load(&compile_graph(block(1, 8, 8), "").unwrap()).unwrap();
    let e = exe.run_any(&input(&[1, 5, 8, 8], 0)).unwrap_err();
    assert!(e.message().contains("[1, 5, 8, 8]"), "{e}");
}

/// Artifacts of format version 3 (one plan, weights in plan order) still load and run.
#[test]
fn version_3_artifacts_still_load() {
    let bytes = compile_graph(block(1, 8, 8), "").unwrap();
    let p = crate::artifact::decode(&bytes).unwrap();
    let v3 = crate::artifact::encode_v3(&p).unwrap();
    assert_eq!(u32::from_le_bytes(v3[8..12].try_into().unwrap()), 3);
    let x = input(&[1, 4, 8, 8], 1);
    let a = NpuExecutable::load(&v3).unwrap().run(&x).unwrap();
    let b = NpuExecutable::load(&bytes).unwrap().run(&x).unwrap();
    assert_eq!(a, b);
}
