//! Weight packing shared by `PackConvWeights` and `PackLinearWeights`.

use super::pass::ProgressFn;
use crate::kernels::gemm;
use crate::program::{Def, Layout, Program, Role, ValueId};
use plugin_api::graph::Op;
use std::collections::HashMap;

/// Packs the plain constant weight operand ([`Role::Weight`]) of every step whose op satisfies
/// `is_target` into the GEMM panel layout. A weight that something else also reads as a plain
/// tensor is packed into a separate copy. Returns how many weights were packed.
pub(crate) fn pack_weight_operands(
    p: &mut Program,
    is_target: fn(&Op) -> bool,
    progress: ProgressFn<'_>,
) -> usize {
    let uses = p.uses();
    let targets: Vec<(usize, usize, ValueId)> = p
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| is_target(&s.op))
        .filter_map(|(i, s)| Some((i, s.slot(Role::Weight)?, s.operand(Role::Weight)?)))
        .filter(|&(_, _, v)| matches!(p.values[v].def, Def::Weight(w) if p.weights[w].layout == Layout::Plain))
        .collect();
    let total = targets.len() as u64;
    let mut copies: HashMap<ValueId, ValueId> = HashMap::new();
    let mut packed = 0;
    for (k, (s, slot, v)) in targets.into_iter().enumerate() {
        progress("pack weights", k as u64, total);
        if let Some(&nv) = copies.get(&v) {
            p.steps[s].set_read(slot, nv);
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
            && uses[v]
                .iter()
                .all(|&(st, k)| p.steps[st].slot(Role::Weight) == Some(k));
        let nv = p.relayout_weight(v, data, layout, only_weight_slots, "packed");
        if nv != v {
            copies.insert(v, nv);
            p.steps[s].set_read(slot, nv);
        }
        packed += 1;
    }
    progress("pack weights", total, total);
    packed
}
