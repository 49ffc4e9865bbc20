//! The memory model of a schedule, as plain data: alias analysis (a reshape shares its input's
//! memory; an element-wise step or group norm overwrites an operand that dies there), liveness of
//! every intermediate value, and the check that a memory plan never places two values that are
//! live at once in overlapping memory. The compiler's planner (`compiler::memory_plan`) and
//! scheduler optimize over this model; [`check_plan`] verifies a plan against it when a program
//! is validated, e.g. when an artifact is loaded.

use super::ops;
use super::{Def, Loc, MemoryPlan, Program, Step, ValueId};
use plugin_api::graph::Op;

/// One arena buffer: `size` floats live from step `start` through step `end` (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Floats.
    pub size: usize,
    /// Producing step.
    pub start: usize,
    /// Last step that reads it (the step count if it is a graph output).
    pub end: usize,
}

impl Buffer {
    /// Whether the two buffers are live at a common step.
    pub fn overlaps_in_time(&self, o: &Buffer) -> bool {
        self.start <= o.end && o.start <= self.end
    }
}

/// Checks that no two buffers live at the same time share memory.
pub fn check_no_overlap(bufs: &[Buffer], offsets: &[usize]) -> Result<(), String> {
    for i in 0..bufs.len() {
        for j in i + 1..bufs.len() {
            let (a, b) = (&bufs[i], &bufs[j]);
            let space = offsets[i] < offsets[j] + b.size && offsets[j] < offsets[i] + a.size;
            if a.overlaps_in_time(b) && space && a.size > 0 && b.size > 0 {
                return Err(format!(
                    "buffers {i} (steps {}..={}, floats {}..{}) and {j} (steps {}..={}, floats {}..{}) overlap",
                    a.start, a.end, offsets[i], offsets[i] + a.size, b.start, b.end, offsets[j], offsets[j] + b.size
                ));
            }
        }
    }
    Ok(())
}

/// Result of alias and liveness analysis.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// The value whose memory each value uses: itself, unless it is a reshape of something or
    /// was computed in place over an operand (then that operand's root).
    pub root: Vec<ValueId>,
    /// One buffer per root value produced by a step.
    pub buffers: Vec<Buffer>,
    /// Buffer index of each value's root, if it lives in the arena.
    pub buffer_of: Vec<Option<usize>>,
}

/// The operand slot whose memory `step` may overwrite with its output, if any: the runtime has
/// an in-place kernel for that slot ([`ops::in_place_slots`]), the operand has the output's
/// number of elements and lives in arena buffer `b` (`buffer_of`) that `dies(b)` here (nothing
/// reads it later and it is not a graph output), and no other value the step reads shares that
/// buffer.
/// Shared by [`analyze`] and the scheduler, so that both model memory the same way.
pub fn in_place_slot(
    p: &Program,
    step: &Step,
    buffer_of: &[Option<usize>],
    dies: impl Fn(usize) -> bool,
) -> Option<usize> {
    let numel = p.values[step.output].numel();
    ops::in_place_slots(&step.op).iter().copied().find(|&k| {
        let Some(&v) = step.inputs.get(k) else {
            return false;
        };
        let Some(b) = buffer_of[v] else { return false };
        p.values[v].numel() == numel
            && step
                .reads()
                .enumerate()
                .all(|(j, u)| j == k || buffer_of[u] != Some(b))
            && dies(b)
    })
}

/// Whether `step` only renames its operand's memory (a reshape without an epilogue).
pub fn is_alias(step: &Step) -> bool {
    matches!(step.op, Op::Reshape(_)) && step.activation.is_none()
}

/// Computes aliases and live ranges of `p` (which must be structurally valid). A step's output
/// shares its operand's buffer when it is a reshape ([`is_alias`]) or runs in place
/// ([`in_place_slot`]).
pub fn analyze(p: &Program) -> Liveness {
    let n = p.values.len();
    // The last step reading each value; graph outputs are read after the last step.
    let mut last = vec![0; n];
    for (s, step) in p.steps.iter().enumerate() {
        step.reads().for_each(|v| last[v] = s);
    }
    p.outputs.iter().for_each(|o| last[o.value] = p.steps.len());
    let mut root: Vec<ValueId> = (0..n).collect();
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut buffer_of = vec![None; n];
    for (s, step) in p.steps.iter().enumerate() {
        let out = step.output;
        // Buffer ends so far cover every read of every value placed in them (all defined
        // before `s`), so a buffer dies here iff its end is `s`.
        let shared = if is_alias(step) {
            Some(step.inputs[0])
        } else {
            in_place_slot(p, step, &buffer_of, |b| buffers[b].end == s).map(|k| step.inputs[k])
        };
        match shared {
            Some(v) => {
                root[out] = root[v];
                buffer_of[out] = buffer_of[v];
            }
            None => {
                buffer_of[out] = Some(buffers.len());
                buffers.push(Buffer {
                    size: p.values[out].numel(),
                    start: s,
                    end: s,
                });
            }
        }
        if let Some(b) = buffer_of[out] {
            buffers[b].end = buffers[b].end.max(last[out]);
        }
    }
    Liveness {
        root,
        buffers,
        buffer_of,
    }
}

/// Checks a (possibly deserialized) memory plan against the program.
pub fn check_plan(p: &Program, mem: &MemoryPlan) -> Result<(), String> {
    if mem.locs.len() != p.values.len() {
        return Err(format!(
            "memory plan has {} locations for {} values",
            mem.locs.len(),
            p.values.len()
        ));
    }
    let live = analyze(p);
    let mut offsets = vec![usize::MAX; live.buffers.len()];
    for (v, &loc) in mem.locs.iter().enumerate() {
        let ok = match (live.buffer_of[v], p.values[live.root[v]].def) {
            (Some(b), _) => match loc {
                Loc::Arena { offset, len } => {
                    let fits = len == live.buffers[b].size
                        && offset.checked_add(len).is_some_and(|e| e <= mem.arena_len);
                    if fits && (offsets[b] == usize::MAX || offsets[b] == offset) {
                        offsets[b] = offset;
                        true
                    } else {
                        false
                    }
                }
                _ => false,
            },
            (None, Def::Input(i)) => loc == Loc::Input(i),
            (None, Def::Weight(w)) => loc == Loc::Weight(w),
            (None, Def::Step(_)) => false,
        };
        if !ok {
            return Err(format!(
                "memory plan: value {v} (shape {:?}) has inconsistent location {loc:?}",
                p.values[v].shape
            ));
        }
    }
    check_no_overlap(&live.buffers, &offsets).map_err(|e| format!("memory plan: {e}"))
}
