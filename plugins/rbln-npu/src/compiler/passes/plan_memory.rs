//! Assigns every intermediate value an offset in one per-call arena (see
//! [`crate::compiler::memory_plan`]), then checks that a run fits in the memory budget
//! ([`Program::check_footprint`]).

use super::pass::{Pass, ProgressFn};
use crate::compiler::memory_plan;
use crate::program::Program;
use plugin_api::PluginError;

/// See the module docs.
pub struct PlanMemory;

impl Pass for PlanMemory {
    fn name(&self) -> &'static str {
        "PlanMemory"
    }
    fn run(&self, p: &mut Program, progress: ProgressFn<'_>) -> Result<(), PluginError> {
        progress("plan memory", 0, 1);
        p.memory = Some(memory_plan::plan(p));
        progress("plan memory", 1, 1);
        p.check_footprint()
    }
}
