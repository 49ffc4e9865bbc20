//! The CPU runtime: an immutable shared plan plus a per-call arena. Each step's operands are
//! resolved to slices (caller inputs, weights or arena ranges) and handed to a kernel.

pub mod control;
pub mod executable;
pub mod profile;

use crate::kernels::{attention, conv, eltwise, layout, matmul, norm, winograd};
use crate::program::{Algo, Def, Layout, Loc, Program, Role, Step};
use plugin_api::graph::Op;

/// Read-only storage a step may read from besides the arena.
pub(crate) struct Sources<'a> {
    pub inputs: &'a [&'a [f32]],
    pub program: &'a Program,
}

fn slice_of<'a>(
    loc: Loc,
    src: &Sources<'a>,
    before: &'a [f32],
    after: &'a [f32],
    out_end: usize,
) -> &'a [f32] {
    match loc {
        Loc::Input(i) => src.inputs[i],
        Loc::Weight(w) => &src.program.weights[w].data,
        // The plan was validated: an operand never overlaps the step's output range.
        Loc::Arena { offset, len } if offset + len <= before.len() => &before[offset..offset + len],
        Loc::Arena { offset, len } => &after[offset - out_end..offset - out_end + len],
    }
}

/// Runs step `s` of `src.program` over `arena`, with `workspace` (at least
/// [`Program::workspace_len`] floats) for kernels that need scratch memory.
pub(crate) fn run_step(s: usize, src: &Sources<'_>, arena: &mut [f32], workspace: &mut [f32]) {
    let p = src.program;
    let step = &p.steps[s];
    let mem = p
        .memory
        .as_ref()
        .expect("validated programs have a memory plan");
    let out_loc = mem.locs[step.output];
    if matches!(step.op, Op::Reshape(_))
        && step.inputs.first().map(|&v| mem.locs[v]) == Some(out_loc)
    {
        return; // aliases its input
    }
    let Loc::Arena { offset, len } = out_loc else {
        unreachable!("validated plan: step outputs live in the arena")
    };
    let (before, rest) = arena.split_at_mut(offset);
    let (out, after) = rest.split_at_mut(len);
    let (before, after): (&[f32], &[f32]) = (before, after);
    // An operand the planner placed on the output (see `program::ops::in_place_slots`) is read
    // through `out`.
    let in_place = step.reads().position(|v| len > 0 && mem.locs[v] == out_loc);
    let ins: Vec<&[f32]> = step
        .reads()
        .enumerate()
        .map(|(slot, v)| match in_place {
            Some(k) if k == slot => &[][..],
            _ => slice_of(mem.locs[v], src, before, after, offset + len),
        })
        .collect();
    match in_place {
        Some(slot) => execute_in_place(p, step, slot, &ins, out),
        None => execute(p, step, &ins, out, workspace),
    }
    if let Some(act) = step.activation {
        if !matches!(step.op, Op::GroupNorm(_)) {
            eltwise::activation_inplace(act, out);
        }
    }
}

/// Whether the step's weight is stored in a GEMM panel layout.
fn packed_weight(p: &Program, step: &Step) -> bool {
    step.operand(Role::Weight).is_some_and(
        |v| matches!(p.values[v].def, Def::Weight(w) if p.weights[w].layout != Layout::Plain),
    )
}

/// Runs `step` whose operand `slot` lives in `out` (`ins[slot]` is empty): one of
/// [`program::ops::in_place_slots`](crate::program::ops::in_place_slots).
fn execute_in_place(p: &Program, step: &Step, slot: usize, ins: &[&[f32]], out: &mut [f32]) {
    match &step.op {
        Op::GroupNorm(g) => {
            let x = &p.values[step.inputs[0]].shape;
            let s = x[2..].iter().product();
            let (gamma, beta) = (ins[1], ins[2]);
            let act = step.activation;
            norm::group_norm_inplace(out, x[0], x[1], s, g.num_groups, g.eps, gamma, beta, act);
        }
        Op::Activation { kind } => eltwise::activation_inplace(*kind, out),
        Op::Add => eltwise::add_inplace(out, ins[1 - slot]),
        Op::Scale(s) => eltwise::scale_inplace(out, s.factor),
        other => unreachable!("validated plan: {} runs in place", other.kind_name()),
    }
}

/// Runs `step` into `out`; `ins` holds the values it reads, by read slot ([`Step::reads`]).
pub(crate) fn execute(
    p: &Program,
    step: &Step,
    ins: &[&[f32]],
    out: &mut [f32],
    workspace: &mut [f32],
) {
    let shape = |slot: usize| p.values[step.inputs[slot]].shape.as_slice();
    match &step.op {
        Op::Conv2d(c) => {
            let (x, w) = (shape(0), shape(1));
            let up = if step.upsample_input { 2 } else { 1 };
            let read = |role| step.slot(role).map(|k| ins[k]);
            let (bias, residual) = (read(Role::Bias), read(Role::Residual));
            let g = conv::ConvGeom {
                input: [x[0], x[1], up * x[2], up * x[3]],
                c_out: w[0],
                kernel: [w[2], w[3]],
                stride: c.stride,
                padding: c.padding,
            };
            if step.algo == Algo::WinogradF4 {
                let u: &[f32] = if p.stores_winograd_filters(step) {
                    ins[1]
                } else {
                    let u = &mut workspace[..winograd::transformed_len(w[0], w[1])];
                    winograd::transform_filters(ins[1], w[0], w[1], u);
                    u
                };
                winograd::conv3x3(&g, ins[0], step.upsample_input, u, bias, residual, out);
            } else if packed_weight(p, step) {
                conv::conv2d_packed(&g, ins[0], ins[1], bias, out);
            } else {
                conv::conv2d(&g, ins[0], ins[1], bias, out);
            }
        }
        Op::GroupNorm(g) => {
            let x = shape(0);
            let s = x[2..].iter().product();
            norm::group_norm(
                ins[0],
                x[0],
                x[1],
                s,
                g.num_groups,
                g.eps,
                ins[1],
                ins[2],
                step.activation,
                out,
            );
        }
        Op::Activation { kind } => eltwise::activation(*kind, ins[0], out),
        Op::Add => eltwise::add(ins[0], ins[1], out),
        Op::Scale(s) => eltwise::scale(ins[0], s.factor, out),
        Op::UpsampleNearest2x => {
            let x = shape(0);
            layout::upsample_nearest_2x(ins[0], x[0] * x[1], x[2], x[3], out);
        }
        Op::Linear => {
            let (x, w) = (shape(0), shape(1));
            let k = w[1];
            let rows = x.iter().product::<usize>() / k.max(1);
            let bias = step.slot(Role::Bias).map(|k| ins[k]);
            if packed_weight(p, step) {
                matmul::linear_packed(ins[0], rows, k, ins[1], w[0], bias, out);
            } else {
                matmul::linear(ins[0], rows, k, ins[1], w[0], bias, out);
            }
        }
        Op::MatMul(m) => {
            let (a, r) = (shape(0), shape(0).len());
            let batch = a[..r - 2].iter().product();
            let n = p.values[step.output].shape[r - 1];
            matmul::matmul(
                ins[0],
                ins[1],
                batch,
                a[r - 2],
                a[r - 1],
                n,
                m.transpose_b,
                out,
            );
        }
        Op::Attention(a) => {
            let (q, k, v) = (shape(0), shape(1), shape(2));
            attention::attention(
                ins[0],
                ins[1],
                ins[2],
                [q[0], q[1], k[1], q[2], v[2]],
                a.scale,
                out,
            );
        }
        Op::Softmax => {
            let d = *shape(0).last().expect("softmax rank >= 1");
            matmul::softmax(ins[0], d, out);
        }
        Op::Reshape(_) => out.copy_from_slice(ins[0]),
        Op::Transpose(t) => layout::transpose(ins[0], shape(0), &t.perm, out),
        Op::Slice(s) => layout::slice(ins[0], shape(0), s.axis, s.start, s.end, out),
        other => unreachable!("validated plan: op {} has a kernel", other.kind_name()),
    }
}
