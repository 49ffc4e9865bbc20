//! What this build's kernels can run: the ops that have a kernel (checked by
//! [`Program::validate`](super::Program::validate)) and the operands each kernel can overwrite
//! with its output (used by the memory planner and its checker; the runtime's in-place kernels
//! implement exactly these).

use plugin_api::graph::Op;

/// Whether the runtime has a kernel for `op`.
pub fn supports(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv2d(_)
            | Op::GroupNorm(_)
            | Op::Activation { .. }
            | Op::Add
            | Op::Scale(_)
            | Op::UpsampleNearest2x
            | Op::Linear
            | Op::MatMul(_)
            | Op::Softmax
            | Op::Attention(_)
            | Op::Reshape(_)
            | Op::Transpose(_)
            | Op::Slice(_)
    )
}

/// Operand slots a step's kernel can overwrite with its output: the memory planner places the
/// output on such an operand when the operand dies at the step.
pub fn in_place_slots(op: &Op) -> &'static [usize] {
    match op {
        Op::GroupNorm(_) | Op::Activation { .. } | Op::Scale(_) => &[0],
        Op::Add => &[0, 1],
        _ => &[],
    }
}
