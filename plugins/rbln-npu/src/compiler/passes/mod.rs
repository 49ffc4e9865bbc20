//! The optimization passes, one struct per file, run in the order of [`pipeline`].

mod constant_fold;
mod fold_upsample;
mod fuse_attention;
mod fuse_group_norm_silu;
mod fuse_residual_add;
mod pack_conv_weights;
mod pack_linear_weights;
mod plan_memory;
mod schedule_memory;
mod select_winograd;

pub use constant_fold::ConstantFold;
pub use fold_upsample::FoldUpsample;
pub use fuse_attention::FuseAttention;
pub use fuse_group_norm_silu::FuseGroupNormSilu;
pub use fuse_residual_add::FuseResidualAdd;
pub use pack_conv_weights::PackConvWeights;
pub use pack_linear_weights::PackLinearWeights;
pub use plan_memory::PlanMemory;
pub use schedule_memory::ScheduleMemory;
pub use select_winograd::{direct_cost, winograd_cost, SelectWinograd};

use crate::kernels::gemm;
use crate::program::{Def, Layout, Program, ValueId};
use plugin_api::graph::Op;
use plugin_api::PluginError;
use std::collections::HashMap;

/// Progress callback: `(stage, done, total)`.
pub type ProgressFn<'a> = &'a dyn Fn(&str, u64, u64);

/// A program-to-program transformation. The driver re-validates the program after each pass.
pub trait Pass {
    /// The pass name used in errors, e.g. `PackConvWeights`.
    fn name(&self) -> &'static str;
    /// Transforms `p` in place.
    fn run(&self, p: &mut Program, progress: ProgressFn<'_>) -> Result<(), PluginError>;
}

/// Every pass, in order. `SelectWinograd` runs before `FoldUpsample` (which folds only into
/// Winograd convolutions) and before `PackConvWeights` (which packs only the
/// convolution weights still plain); `ScheduleMemory` runs after every pass that adds, removes
/// or fuses steps, and `PlanMemory` must stay last: the others invalidate memory plans.
pub fn pipeline() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(ConstantFold),
        Box::new(FuseGroupNormSilu),
        Box::new(FuseAttention),
        Box::new(SelectWinograd),
        Box::new(FoldUpsample),
        Box::new(FuseResidualAdd),
        Box::new(PackConvWeights),
        Box::new(PackLinearWeights),
        Box::new(ScheduleMemory),
        Box::new(PlanMemory),
    ]
}

/// Packs the plain constant weight operand (slot 1) of every step whose op satisfies
/// `is_target` into the GEMM panel layout. A weight that something else also reads as a plain
/// tensor is packed into a separate copy. Returns how many weights were packed.
pub(crate) fn pack_weight_operands(
    p: &mut Program,
    is_target: fn(&Op) -> bool,
    progress: ProgressFn<'_>,
) -> usize {
    let uses = p.uses();
    let targets: Vec<(usize, ValueId)> = p
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| is_target(&s.op) && s.inputs.len() >= 2)
        .map(|(i, s)| (i, s.inputs[1]))
        .filter(|&(_, v)| matches!(p.values[v].def, Def::Weight(w) if p.weights[w].layout == Layout::Plain))
        .collect();
    let total = targets.len() as u64;
    let mut copies: HashMap<ValueId, ValueId> = HashMap::new();
    let mut packed = 0;
    for (k, (s, v)) in targets.into_iter().enumerate() {
        progress("pack weights", k as u64, total);
        if let Some(&nv) = copies.get(&v) {
            p.steps[s].inputs[1] = nv;
            continue;
        }
        let Def::Weight(w) = p.values[v].def else {
            continue;
        };
        let rows = p.values[v].shape[0];
        if p.weights[w].layout != Layout::Plain || rows == 0 {
            continue;
        }
        let depth = p.values[v].numel() / rows;
        let data = gemm::pack_a(&p.weights[w].data, rows, depth);
        let layout = Layout::PackedA {
            rows,
            depth,
            mr: gemm::MR,
        };
        let only_weight_slots = !p.is_output(v)
            && uses[v].iter().all(|&(st, slot)| {
                slot == 1 && matches!(p.steps[st].op, Op::Conv2d(_) | Op::Linear)
            });
        let nv = p.relayout_weight(v, data, layout, only_weight_slots, "packed");
        if nv != v {
            copies.insert(v, nv);
            p.steps[s].inputs[1] = nv;
        }
        packed += 1;
    }
    progress("pack weights", total, total);
    packed
}
