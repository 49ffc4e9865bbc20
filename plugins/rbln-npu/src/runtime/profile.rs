//! Per-step timing: with `MLHOST_PROFILE=1` in the environment, every run prints a table of its
//! steps (slowest first, with each step's share of the run and its effective GFLOP/s) and a
//! summary per kernel to stderr.

use crate::program::{Algo, Program, Role, Step};
use plugin_api::graph::Op;
use plugin_api::tensor::shape_str;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::OnceLock;
use std::time::Duration;

/// Whether `MLHOST_PROFILE` is set to something other than empty or `0` (read once).
pub(crate) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("MLHOST_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// Multiply-adds x 2 of a step as a direct (non-Winograd) computation, or 0 for memory-bound ops.
pub fn step_flops(p: &Program, step: &Step) -> f64 {
    let shape = |v: usize| p.values[v].shape.as_slice();
    let weight = || {
        step.operand(Role::Weight)
            .expect("validated: the op has a weight")
    };
    let out: f64 = shape(step.output).iter().product::<usize>() as f64;
    match &step.op {
        Op::Conv2d(_) => {
            let w = shape(weight());
            out * 2.0 * (w[1] * w[2] * w[3]) as f64
        }
        Op::Linear => out * 2.0 * shape(weight())[1] as f64,
        Op::MatMul(_) => {
            let a = shape(step.inputs[0]);
            out * 2.0 * a[a.len() - 1] as f64
        }
        Op::Attention(_) => {
            // q k^T (N x M x D) and probs v (N x M x E), per batch.
            let (q, k, v) = (
                shape(step.inputs[0]),
                shape(step.inputs[1]),
                shape(step.inputs[2]),
            );
            2.0 * (q[0] * q[1] * k[1] * (q[2] + v[2])) as f64
        }
        _ => 0.0,
    }
}

/// Total [`step_flops`] of a program.
pub fn program_flops(p: &Program) -> f64 {
    p.steps.iter().map(|s| step_flops(p, s)).sum()
}

/// The kernel label of a step of `p`, e.g. `conv2d[winograd-f4x4]+silu`; `[winograd-f4x4,U]`
/// when the transformed filters are stored.
pub fn kernel_label(p: &Program, step: &Step) -> String {
    let mut k = step.op.kind_name().to_string();
    if step.algo == Algo::WinogradF4 {
        k.push_str(if p.stores_winograd_filters(step) {
            "[winograd-f4x4,U]"
        } else {
            "[winograd-f4x4]"
        });
    }
    if step.upsample_input {
        k = format!("upsample2x+{k}");
    }
    if step.residual.is_some() {
        k.push_str("+residual");
    }
    if let Some(a) = step.activation {
        k = format!("{k}+{}", format!("{a:?}").to_lowercase());
    }
    k
}

/// The table for one run with `times[i]` spent in step `i`.
pub fn report(p: &Program, times: &[Duration]) -> String {
    let total: f64 = times.iter().map(Duration::as_secs_f64).sum();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "MLHOST_PROFILE {}: {} steps, {:.3} s, {:.1} GFLOP (direct-convolution count), kernel path {}",
        p.name,
        p.steps.len(),
        total,
        program_flops(p) / 1e9,
        crate::kernels::isa::path().isa()
    );
    let _ = writeln!(
        s,
        "{:>9} {:>6} {:>8}  {:<34} {:<22} step",
        "ms", "%", "GFLOP/s", "kernel", "output"
    );
    let mut order: Vec<usize> = (0..p.steps.len()).collect();
    order.sort_by(|&a, &b| times[b].cmp(&times[a]));
    for &i in &order {
        let st = &p.steps[i];
        let t = times[i].as_secs_f64();
        let f = step_flops(p, st);
        let rate = if f > 0.0 && t > 0.0 {
            format!("{:.1}", f / t / 1e9)
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "{:>9.2} {:>6.1} {:>8}  {:<34} {:<22} {}",
            t * 1e3,
            100.0 * t / total.max(1e-12),
            rate,
            kernel_label(p, st),
            shape_str(&p.values[st.output].shape),
            st.name
        );
    }
    let mut by_kernel: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
    for (st, t) in p.steps.iter().zip(times) {
        let e = by_kernel.entry(kernel_label(p, st)).or_default();
        e.0 += 1;
        e.1 += t.as_secs_f64();
        e.2 += step_flops(p, st);
    }
    let _ = writeln!(s, "per kernel:");
    let mut rows: Vec<_> = by_kernel.into_iter().collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    for (k, (n, t, f)) in rows {
        let _ = writeln!(
            s,
            "{:>9.2} {:>6.1} {:>8}  {k} x{n}",
            t * 1e3,
            100.0 * t / total.max(1e-12),
            if f > 0.0 {
                format!("{:.1}", f / t.max(1e-12) / 1e9)
            } else {
                "-".into()
            }
        );
    }
    s
}
