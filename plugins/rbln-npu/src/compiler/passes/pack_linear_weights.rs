//! Packs constant linear weights `[N, K]` into the GEMM panel layout (the runtime computes
//! `out^T = W x^T`, so the weight is the packed left operand).

use super::packing::pack_weight_operands;
use super::pass::{Pass, ProgressFn};
use crate::program::Program;
use plugin_api::graph::Op;
use plugin_api::PluginError;

/// See the module docs.
pub struct PackLinearWeights;

impl Pass for PackLinearWeights {
    fn name(&self) -> &'static str {
        "PackLinearWeights"
    }
    fn run(&self, p: &mut Program, progress: ProgressFn<'_>) -> Result<(), PluginError> {
        pack_weight_operands(p, |op| matches!(op, Op::Linear), progress);
        Ok(())
    }
}
