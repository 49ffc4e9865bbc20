//! The static memory planner: greedy best-fit offsets in one f32 arena for the buffers of the
//! program's memory model ([`crate::program::liveness`]).

use crate::program::liveness::{analyze, Buffer};
use crate::program::{Def, Loc, MemoryPlan, Program};

/// Arena offsets are multiples of this many floats (64 bytes).
pub const ALIGN: usize = 16;

/// Places buffers greedily, largest first, each into the smallest gap left between the
/// buffers already placed that are live at the same time. Returns offsets and arena size.
pub fn assign_offsets(bufs: &[Buffer], align: usize) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..bufs.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(bufs[i].size), bufs[i].start));
    let mut offsets = vec![0; bufs.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut total = 0;
    for i in order {
        let b = bufs[i];
        let mut live: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| bufs[j].overlaps_in_time(&b))
            .map(|&j| (offsets[j], bufs[j].size))
            .collect();
        live.sort_unstable();
        let (mut cursor, mut best): (usize, Option<(usize, usize)>) = (0, None);
        for (off, size) in live {
            if off >= cursor && off - cursor >= b.size {
                let gap = off - cursor;
                if best.is_none_or(|(_, g)| gap < g) {
                    best = Some((cursor, gap));
                }
            }
            // Saturating: an arena that overflows fails the memory budget check.
            let end = off.saturating_add(size);
            cursor = cursor.max(end.checked_next_multiple_of(align).unwrap_or(usize::MAX));
        }
        offsets[i] = best.map_or(cursor, |(o, _)| o);
        total = total.max(offsets[i].saturating_add(b.size));
        placed.push(i);
    }
    (offsets, total)
}

/// Builds the memory plan of `p`.
pub fn plan(p: &Program) -> MemoryPlan {
    let live = analyze(p);
    let (offsets, arena_len) = assign_offsets(&live.buffers, ALIGN);
    let locs = (0..p.values.len())
        .map(|v| match (live.buffer_of[v], p.values[live.root[v]].def) {
            (Some(b), _) => Loc::Arena {
                offset: offsets[b],
                len: live.buffers[b].size,
            },
            (None, Def::Input(i)) => Loc::Input(i),
            (None, Def::Weight(w)) => Loc::Weight(w),
            (None, Def::Step(_)) => unreachable!("every step output root has a buffer"),
        })
        .collect();
    MemoryPlan { arena_len, locs }
}

#[cfg(test)]
#[path = "memory_plan_tests.rs"]
mod tests;
