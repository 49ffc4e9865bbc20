//! Fuses `matmul(q, k^T)` -> (optional `scale`) -> `softmax` -> `matmul(·, v)` into one
//! `attention` step, whose kernel never holds the whole `N x M` score matrix (see
//! `kernels::attention`).

use super::pass::{Pass, ProgressFn};
use crate::program::{Def, Program};
use plugin_api::graph::{Attention, Op};
use plugin_api::PluginError;

/// See the module docs.
pub struct FuseAttention;

impl Pass for FuseAttention {
    fn name(&self) -> &'static str {
        "FuseAttention"
    }
    fn run(&self, p: &mut Program, _progress: ProgressFn<'_>) -> Result<(), PluginError> {
        let uses = p.uses();
        // The single step reading value v (at any slot), if v is not also a graph output.
        let only_reader = |p: &Program, v: usize| match uses[v][..] {
            [(s, _)] if !p.is_output(v) => Some(s),
            _ => None,
        };
        let producer = |p: &Program, v: usize| match p.values[v].def {
            Def::Step(s) => Some(s),
            _ => None,
        };
        let mut remove = vec![false; p.steps.len()];
        for sm in 0..p.steps.len() {
            if !matches!(p.steps[sm].op, Op::Softmax) || p.steps[sm].activation.is_some() {
                continue;
            }
            // softmax's input: scores, or scale(scores).
            let Some(mut m1) = producer(p, p.steps[sm].inputs[0]) else {
                continue;
            };
            let mut scale = 1.0f32;
            let mut chain = vec![];
            if let Op::Scale(s) = &p.steps[m1].op {
                scale = s.factor;
                chain.push(m1);
                let Some(inner) = producer(p, p.steps[m1].inputs[0]) else {
                    continue;
                };
                m1 = inner;
            }
            let Some(m2) = only_reader(p, p.steps[sm].output) else {
                continue;
            };
            let first_ok = matches!(p.steps[m1].op, Op::MatMul(ref m) if m.transpose_b);
            let second_ok = matches!(p.steps[m2].op, Op::MatMul(ref m) if !m.transpose_b)
                && p.steps[m2].inputs[0] == p.steps[sm].output;
            let single = only_reader(p, p.steps[m1].output).is_some()
                && chain
                    .iter()
                    .all(|&c| only_reader(p, p.steps[c].output).is_some());
            let plain = [m1, m2]
                .iter()
                .chain(&chain)
                .all(|&s| p.steps[s].activation.is_none());
            if !(first_ok && second_ok && single && plain) {
                continue;
            }
            let (q, k, v) = (
                p.steps[m1].inputs[0],
                p.steps[m1].inputs[1],
                p.steps[m2].inputs[1],
            );
            let rank3 = [q, k, v].iter().all(|&x| p.values[x].shape.len() == 3);
            if !rank3 {
                continue;
            }
            let step = &mut p.steps[m2];
            step.op = Op::Attention(Attention { scale });
            step.inputs = vec![q, k, v];
            step.name = format!("{} (fused attention)", step.name);
            remove[m1] = true;
            remove[sm] = true;
            chain.iter().for_each(|&c| remove[c] = true);
        }
        p.remove_steps(&remove);
        Ok(())
    }
}
