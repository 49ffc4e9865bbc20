//! Constant folding: a step whose operands are all constants is evaluated once, at compile
//! time, and becomes a constant; a `scale` of the result of a convolution or linear layer with
//! constant weights (read by nothing else) is folded into those weights and bias
//! (`s (W x + b) = (s W) x + s b`; the VAE's attention scales `q` this way).

use super::pass::{Pass, ProgressFn};
use crate::program::{Def, Layout, Program, Role, Step, ValueId, Weight};
use plugin_api::graph::Op;
use plugin_api::PluginError;

/// See the module docs.
pub struct ConstantFold;

fn constant(p: &Program, v: ValueId) -> Option<usize> {
    match p.values[v].def {
        Def::Weight(w) if p.weights[w].layout == Layout::Plain => Some(w),
        _ => None,
    }
}

/// The read slots of a convolution's or linear layer's weight and bias: scaling the step's
/// result scales them.
fn parameters(st: &Step) -> impl Iterator<Item = usize> + '_ {
    [Role::Weight, Role::Bias]
        .into_iter()
        .filter_map(|r| st.slot(r))
}

impl Pass for ConstantFold {
    fn name(&self) -> &'static str {
        "ConstantFold"
    }
    fn run(&self, p: &mut Program, _progress: ProgressFn<'_>) -> Result<(), PluginError> {
        let mut remove = vec![false; p.steps.len()];
        // 1. Steps of constants only become constants.
        for s in 0..p.steps.len() {
            let st = &p.steps[s];
            if st.inputs.is_empty() || !st.reads().all(|v| constant(p, v).is_some()) {
                continue;
            }
            let ins: Vec<&[f32]> = st
                .reads()
                .map(|v| p.weights[constant(p, v).expect("checked")].data.as_slice())
                .collect();
            let out_v = st.output;
            let mut out = vec![0.0f32; p.values[out_v].numel()];
            crate::runtime::execute(p, st, &ins, &mut out, &mut []);
            if let Some(a) = st.activation {
                crate::kernels::eltwise::activation_inplace(a, &mut out);
            }
            p.weights.push(Weight {
                name: format!("{}#folded", st.name),
                layout: Layout::Plain,
                len: out.len(),
                data: out.into(),
            });
            p.values[out_v].def = Def::Weight(p.weights.len() - 1);
            remove[s] = true;
        }
        // 2. scale(conv / linear with constant weights) folds into the weights.
        let uses = p.uses();
        for s in 0..p.steps.len() {
            let Op::Scale(sc) = &p.steps[s].op else {
                continue;
            };
            let (f, x) = (sc.factor, p.steps[s].inputs[0]);
            let Def::Step(prod) = p.values[x].def else {
                continue;
            };
            let pr = &p.steps[prod];
            let foldable = matches!(pr.op, Op::Conv2d(_) | Op::Linear)
                && !remove[prod]
                && pr.activation.is_none()
                && p.steps[s].activation.is_none()
                && uses[x].len() == 1
                && !p.is_output(x)
                && pr.residual.is_none()
                && parameters(pr).all(|k| constant(p, pr.inputs[k]).is_some());
            if !foldable {
                continue;
            }
            // Scaled copies: the originals may be read elsewhere (compaction drops them if not).
            for slot in parameters(&p.steps[prod]).collect::<Vec<_>>() {
                let v = p.steps[prod].inputs[slot];
                let w = constant(p, v).expect("checked");
                let data: Vec<f32> = p.weights[w].data.iter().map(|&a| a * f).collect();
                let name = format!("{}#scaled", p.weights[w].name);
                let shape = p.values[v].shape.clone();
                let nv = p.add_weight(name, shape, Layout::Plain, data);
                p.steps[prod].set_read(slot, nv);
            }
            p.steps[prod].output = p.steps[s].output;
            remove[s] = true;
        }
        p.remove_steps(&remove);
        Ok(())
    }
}
