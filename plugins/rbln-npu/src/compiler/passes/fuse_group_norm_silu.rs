//! Fuses `silu(group_norm(x))` into one group-norm step with a SiLU epilogue, when the
//! normalized value is read by nothing else.

use super::pass::{Pass, ProgressFn};
use crate::program::Program;
use plugin_api::graph::{Activation, Op};
use plugin_api::PluginError;

/// See the module docs.
pub struct FuseGroupNormSilu;

impl Pass for FuseGroupNormSilu {
    fn name(&self) -> &'static str {
        "FuseGroupNormSilu"
    }
    fn run(&self, p: &mut Program, _progress: ProgressFn<'_>) -> Result<(), PluginError> {
        let uses = p.uses();
        let mut remove = vec![false; p.steps.len()];
        for s in 0..p.steps.len() {
            let step = &p.steps[s];
            if !matches!(step.op, Op::GroupNorm(_)) || step.activation.is_some() {
                continue;
            }
            let out = step.output;
            let [(t, _)] = uses[out][..] else { continue };
            let silu = matches!(
                p.steps[t].op,
                Op::Activation {
                    kind: Activation::Silu
                }
            );
            if !silu || p.steps[t].activation.is_some() || p.is_output(out) {
                continue;
            }
            p.steps[s].activation = Some(Activation::Silu);
            p.steps[s].output = p.steps[t].output;
            remove[t] = true;
        }
        p.remove_steps(&remove);
        Ok(())
    }
}
