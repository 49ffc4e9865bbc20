//! Folds `add(conv(x), r)` into the Winograd convolution's epilogue: the convolution adds `r`
//! while it writes its output, so the sum costs no separate pass over memory. The fused step
//! runs where the add ran (every operand of the convolution is ready there too, and the
//! residual, often a shortcut computed after the convolution, is then ready as well).

use super::pass::{Pass, ProgressFn};
use crate::program::{Algo, Def, Program};
use plugin_api::graph::Op;
use plugin_api::PluginError;

/// See the module docs.
pub struct FuseResidualAdd;

impl Pass for FuseResidualAdd {
    fn name(&self) -> &'static str {
        "FuseResidualAdd"
    }
    fn run(&self, p: &mut Program, _progress: ProgressFn<'_>) -> Result<(), PluginError> {
        let uses = p.uses();
        let mut remove = vec![false; p.steps.len()];
        for a in 0..p.steps.len() {
            if !matches!(p.steps[a].op, Op::Add) || p.steps[a].activation.is_some() {
                continue;
            }
            let operands = [p.steps[a].inputs[0], p.steps[a].inputs[1]];
            for (slot, &v) in operands.iter().enumerate() {
                let Def::Step(c) = p.values[v].def else {
                    continue;
                };
                let conv = &p.steps[c];
                let fusable = conv.algo == Algo::WinogradF4
                    && conv.residual.is_none()
                    && conv.activation.is_none()
                    && !remove[c]
                    && uses[v].len() == 1
                    && !p.is_output(v)
                    && operands[0] != operands[1];
                if !fusable {
                    continue;
                }
                let residual = operands[1 - slot];
                let mut fused = p.steps[c].clone();
                fused.residual = Some(residual);
                fused.output = p.steps[a].output;
                p.steps[a] = fused;
                remove[c] = true;
                break;
            }
        }
        p.remove_steps(&remove);
        Ok(())
    }
}
