//! Human-readable summary of an artifact.

use crate::artifact;
use crate::program::{Algo, Program, Role, Step};
use plugin_api::tensor::shape_str;
use plugin_api::PluginError;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Verifies `bytes` and describes the compiled graph, its memory plan and its target.
pub fn inspect(bytes: &[u8]) -> Result<String, PluginError> {
    let plans = artifact::decode_plans(bytes)?;
    let mut s = summary(&plans[0], bytes.len());
    if plans.len() > 1 {
        let _ = writeln!(
            s,
            "shapes: {} plans over the one copy of the weights above (arena per plan):",
            plans.len()
        );
        for p in &plans {
            let io = |shapes: Vec<(&str, &[usize])>| {
                shapes
                    .iter()
                    .map(|(n, sh)| format!("{n} {}", shape_str(sh)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let ins = io(p
                .inputs
                .iter()
                .map(|i| (i.name.as_str(), &i.shape[..]))
                .collect());
            let outs = io(p
                .outputs
                .iter()
                .map(|o| (o.name.as_str(), &p.values[o.value].shape[..]))
                .collect());
            let winograd = p
                .steps
                .iter()
                .filter(|st| st.algo == Algo::WinogradF4)
                .count();
            let _ = writeln!(
                s,
                "  {ins} -> {outs}: arena {}, {} steps ({winograd} winograd)",
                mib(p.memory.as_ref().map_or(0, |m| m.arena_len * 4)),
                p.steps.len()
            );
        }
    }
    Ok(s)
}

fn mib(bytes: usize) -> String {
    format!(
        "{bytes} bytes ({:.2} MiB)",
        bytes as f64 / (1024.0 * 1024.0)
    )
}

/// The summary text of a program.
pub fn summary(p: &Program, artifact_len: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "rbln-npu artifact v{} ({artifact_len} bytes)",
        artifact::FORMAT_VERSION
    );
    let _ = writeln!(s, "graph: {}", p.name);
    let _ = writeln!(
        s,
        "target npu: {} (num_devices: {}); executes on host CPU cores, no NPU hardware",
        p.target.npu.as_deref().unwrap_or("default"),
        p.target
            .num_devices
            .map_or("default".to_string(), |n| n.to_string())
    );
    let _ = writeln!(
        s,
        "kernel path on this host: {}",
        crate::kernels::isa::describe()
    );
    for i in &p.inputs {
        let _ = writeln!(s, "input  {}: {} f32", i.name, shape_str(&i.shape));
    }
    for o in &p.outputs {
        let _ = writeln!(
            s,
            "output {}: {} f32",
            o.name,
            shape_str(&p.values[o.value].shape)
        );
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for st in &p.steps {
        let k = crate::runtime::profile::kernel_label(p, st);
        *kinds.entry(k).or_default() += 1;
    }
    let _ = writeln!(s, "steps: {}", p.steps.len());
    for (k, n) in kinds {
        let _ = writeln!(s, "  {k}: {n}");
    }
    let flops = crate::runtime::profile::program_flops(p);
    let _ = writeln!(
        s,
        "work per call: {:.3} GFLOP (2 x multiply-adds of direct convolutions and matmuls)",
        flops / 1e9
    );
    let wbytes: usize = p.weights.iter().map(|w| w.len * 4).sum();
    let _ = writeln!(s, "weights: {} tensors, {}", p.weights.len(), mib(wbytes));
    let arena = p.memory.as_ref().map_or(0, |m| m.arena_len * 4);
    let _ = writeln!(s, "arena (peak activation memory): {}", mib(arena));
    let _ = writeln!(
        s,
        "workspace (Winograd filters, per call): {}",
        mib(p.workspace_len() * 4)
    );
    let _ = writeln!(
        s,
        "layers (kernel, output, GFLOP as direct, estimated share of the compute):"
    );
    let costs: Vec<f64> = p.steps.iter().map(|st| estimated_cycles(p, st)).collect();
    let total: f64 = costs.iter().sum::<f64>().max(1.0);
    for (st, c) in p.steps.iter().zip(&costs) {
        let _ = writeln!(
            s,
            "  {:<34} {:<20} {:>8.3} {:>5.1}%  {}",
            crate::runtime::profile::kernel_label(p, st),
            shape_str(&p.values[st.output].shape),
            crate::runtime::profile::step_flops(p, st) / 1e9,
            100.0 * c / total,
            st.name
        );
    }
    s
}

/// The compiler's cost estimate of a step in cycles: the `SelectWinograd` models for
/// convolutions, multiply-adds at 16 per cycle for matmuls, and one cycle per 4 elements for
/// memory-bound steps.
fn estimated_cycles(p: &Program, st: &Step) -> f64 {
    use crate::compiler::passes::{im2col_gemm_cost, winograd_cost};
    use plugin_api::graph::Op;
    let out = &p.values[st.output].shape;
    let numel: usize = out.iter().product();
    match &st.op {
        Op::Conv2d(_) => {
            let w = &p.values[st
                .operand(Role::Weight)
                .expect("convolutions have a weight")]
            .shape;
            let pixels = out[2] * out[3];
            if st.algo == Algo::WinogradF4 {
                winograd_cost(w[0], w[1], out[0] * out[2].div_ceil(4) * out[3].div_ceil(4))
            } else {
                im2col_gemm_cost(w[0], w[1] * w[2] * w[3], pixels) * out[0] as f64
            }
        }
        Op::Linear | Op::MatMul(_) | Op::Attention(_) => {
            crate::runtime::profile::step_flops(p, st) / 32.0
        }
        _ => numel as f64 / 4.0,
    }
}
