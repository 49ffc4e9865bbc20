//! Reorders the steps to lower peak memory. Steps have no side effects, so any topological
//! order of their data dependencies computes the same values; greedy list scheduling picks,
//! among the steps whose operands are ready, the one that grows live memory least: its output's
//! size if it needs a new buffer (not a reshape alias, not in place), minus the buffers that die
//! there (ties: the earlier step). It models buffers like the memory planner, in-place steps
//! included (see [`in_place_slot`]), so it runs e.g. a resnet block's 1x1 shortcut
//! before the group norm that can then overwrite the block's input. The new order is kept only
//! if the planner's arena for it is smaller than for the old one.

use super::pass::{Pass, ProgressFn};
use crate::compiler::memory_plan;
use crate::program::liveness::{in_place_slot, is_alias};
use crate::program::{Def, Program};
use plugin_api::PluginError;

/// See the module docs.
pub struct ScheduleMemory;

impl Pass for ScheduleMemory {
    fn name(&self) -> &'static str {
        "ScheduleMemory"
    }
    fn run(&self, p: &mut Program, progress: ProgressFn<'_>) -> Result<(), PluginError> {
        progress("schedule memory", 0, 1);
        let order = greedy_order(p);
        if order.iter().enumerate().any(|(i, &s)| i != s) {
            let before = memory_plan::plan(p).arena_len;
            p.reorder_steps(&order);
            if memory_plan::plan(p).arena_len >= before {
                let mut undo = vec![0; order.len()];
                order.iter().enumerate().for_each(|(i, &s)| undo[s] = i);
                p.reorder_steps(&undo);
            }
        }
        progress("schedule memory", 1, 1);
        Ok(())
    }
}

/// An arena buffer while scheduling.
#[derive(Clone, Copy)]
struct Buf {
    /// Floats.
    size: usize,
    /// Reads (step, operand slot) of the values placed in it that are not scheduled yet.
    pending: usize,
    /// Holds a graph output: never dies.
    pinned: bool,
}

/// Where a step's output goes.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    /// Into the memory of an operand: its buffer, or none for a reshape of a graph input or
    /// weight.
    Shared(Option<usize>),
    /// Into a new buffer.
    New,
}

/// The scheduler's model of memory after the steps scheduled so far.
struct State<'a> {
    p: &'a Program,
    /// Reads of each value in the whole program.
    reads: Vec<usize>,
    buffer_of: Vec<Option<usize>>,
    bufs: Vec<Buf>,
}

impl State<'_> {
    /// Operand slots of step `s` that read buffer `b`.
    fn reads_of(&self, s: usize, b: usize) -> usize {
        let step = &self.p.steps[s];
        step.reads()
            .filter(|&v| self.buffer_of[v] == Some(b))
            .count()
    }

    fn place(&self, s: usize) -> Place {
        let step = &self.p.steps[s];
        if is_alias(step) {
            return Place::Shared(self.buffer_of[step.inputs[0]]);
        }
        let dies = |b: usize| !self.bufs[b].pinned && self.bufs[b].pending == self.reads_of(s, b);
        match in_place_slot(self.p, step, &self.buffer_of, dies) {
            Some(k) => Place::Shared(self.buffer_of[step.inputs[k]]),
            None => Place::New,
        }
    }

    /// Floats live after step `s` minus floats live before it, if it ran now.
    fn growth(&self, s: usize) -> i64 {
        let (p, step) = (self.p, &self.p.steps[s]);
        let place = self.place(s);
        let out = step.output;
        let (out_reads, out_pinned) = (self.reads[out], p.is_output(out));
        let numel = p.values[out].numel() as i64;
        let mut growth = 0;
        if place == Place::New && (out_reads > 0 || out_pinned) {
            growth += numel;
        }
        let mut seen = Vec::new();
        for b in step.reads().filter_map(|v| self.buffer_of[v]) {
            if seen.contains(&b) {
                continue;
            }
            seen.push(b);
            let buf = self.bufs[b];
            let (mut left, mut pinned) = (buf.pending - self.reads_of(s, b), buf.pinned);
            if place == Place::Shared(Some(b)) {
                left += out_reads;
                pinned |= out_pinned;
            }
            if left == 0 && !pinned {
                growth -= buf.size as i64;
            }
        }
        growth
    }

    /// Schedules step `s`.
    fn run(&mut self, s: usize) {
        let step = &self.p.steps[s];
        let place = self.place(s);
        for v in step.reads() {
            if let Some(b) = self.buffer_of[v] {
                self.bufs[b].pending -= 1;
            }
        }
        let out = step.output;
        let b = match place {
            Place::Shared(b) => b,
            Place::New => {
                self.bufs.push(Buf {
                    size: self.p.values[out].numel(),
                    pending: 0,
                    pinned: false,
                });
                Some(self.bufs.len() - 1)
            }
        };
        self.buffer_of[out] = b;
        if let Some(b) = b {
            self.bufs[b].pending += self.reads[out];
            self.bufs[b].pinned |= self.p.is_output(out);
        }
    }
}

/// The greedy order (old step indices in their new order).
fn greedy_order(p: &Program) -> Vec<usize> {
    let uses = p.uses();
    let mut state = State {
        p,
        reads: uses.iter().map(Vec::len).collect(),
        buffer_of: vec![None; p.values.len()],
        bufs: Vec::new(),
    };
    // Read slots of each step whose producer has not run yet.
    let mut missing: Vec<usize> = p
        .steps
        .iter()
        .map(|s| {
            s.reads()
                .filter(|&v| matches!(p.values[v].def, Def::Step(_)))
                .count()
        })
        .collect();
    let mut ready: Vec<usize> = (0..p.steps.len()).filter(|&s| missing[s] == 0).collect();
    let mut order = Vec::with_capacity(p.steps.len());
    while let Some((i, &s)) = ready
        .iter()
        .enumerate()
        .min_by_key(|&(_, &s)| (state.growth(s), s))
    {
        ready.swap_remove(i);
        state.run(s);
        order.push(s);
        for &(t, _) in &uses[p.steps[s].output] {
            missing[t] -= 1;
            if missing[t] == 0 {
                ready.push(t);
            }
        }
    }
    assert_eq!(order.len(), p.steps.len(), "steps form a DAG");
    order
}
