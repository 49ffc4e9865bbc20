//! Folds a nearest-neighbour 2x upsampling into the Winograd convolution that reads it: the
//! convolution gathers its input tiles straight from the low-resolution tensor, so the 4x
//! larger upsampled tensor is never written, read or allocated.

use super::pass::{Pass, ProgressFn};
use crate::program::{Algo, Def, Program, Role};
use plugin_api::graph::Op;
use plugin_api::PluginError;

/// See the module docs.
pub struct FoldUpsample;

impl Pass for FoldUpsample {
    fn name(&self) -> &'static str {
        "FoldUpsample"
    }
    fn run(&self, p: &mut Program, _progress: ProgressFn<'_>) -> Result<(), PluginError> {
        let uses = p.uses();
        let mut remove = vec![false; p.steps.len()];
        for s in 0..p.steps.len() {
            let st = &p.steps[s];
            if st.algo != Algo::WinogradF4 || st.upsample_input {
                continue;
            }
            let (Some(slot), Some(x)) = (st.slot(Role::Input), st.operand(Role::Input)) else {
                continue;
            };
            let Def::Step(u) = p.values[x].def else {
                continue;
            };
            let up = &p.steps[u];
            let only_reader = matches!(uses[x][..], [(r, k)] if r == s && k == slot);
            if !matches!(up.op, Op::UpsampleNearest2x)
                || up.activation.is_some()
                || !only_reader
                || p.is_output(x)
            {
                continue;
            }
            let low = up.inputs[0];
            p.steps[s].set_read(slot, low);
            p.steps[s].upsample_input = true;
            remove[u] = true;
        }
        p.remove_steps(&remove);
        Ok(())
    }
}
