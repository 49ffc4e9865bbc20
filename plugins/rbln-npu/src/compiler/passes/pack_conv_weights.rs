//! Packs constant conv2d weights `[C_out, C_in, KH, KW]` into the GEMM panel layout of the
//! im2col convolution kernel, once, at compile time.

use super::packing::pack_weight_operands;
use super::pass::{Pass, ProgressFn};
use crate::program::Program;
use plugin_api::graph::Op;
use plugin_api::PluginError;

/// See the module docs.
pub struct PackConvWeights;

impl Pass for PackConvWeights {
    fn name(&self) -> &'static str {
        "PackConvWeights"
    }
    fn run(&self, p: &mut Program, progress: ProgressFn<'_>) -> Result<(), PluginError> {
        pack_weight_operands(p, |op| matches!(op, Op::Conv2d(_)), progress);
        Ok(())
    }
}
