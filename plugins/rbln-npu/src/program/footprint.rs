//! What running a program needs in memory (its arena, weights and workspace) and the budget that
//! must hold it. The compiler checks it after planning memory and the runtime again when it loads
//! an artifact, so a plan that cannot be allocated is an error naming the bytes, never an
//! allocation failure that aborts the process.

use super::Program;
use plugin_api::PluginError;
use std::sync::OnceLock;

/// The default budget is this fraction (numerator / 4) of the physical memory.
const DEFAULT_QUARTERS: u64 = 3;

/// The bytes one run of a program holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// The per-call arena (peak activation memory).
    pub arena: u64,
    /// The weights.
    pub weights: u64,
    /// The per-call workspace (Winograd filters transformed per call).
    pub workspace: u64,
}

impl Footprint {
    /// `arena + weights + workspace`, saturating.
    pub fn total(&self) -> u64 {
        self.arena
            .saturating_add(self.weights)
            .saturating_add(self.workspace)
    }
}

/// Bytes of `floats` f32s, saturating (a saturated count exceeds every budget).
fn bytes(floats: usize) -> u64 {
    (floats as u64).saturating_mul(4)
}

/// The memory budget and where it comes from: `requested` (the `memory_budget` option) if
/// given, else [`DEFAULT_QUARTERS`]/4 of the physical memory; never more than physical memory
/// plus swap (what can be allocated at all), nor than the address space.
pub fn budget(requested: Option<u64>) -> (u64, String) {
    let hard = physical_memory().map(|(mem, swap)| mem.saturating_add(swap));
    let (want, source) = match (requested, physical_memory()) {
        (Some(b), _) => (b, "the memory_budget option".to_string()),
        (None, Some((mem, _))) => (
            mem / 4 * DEFAULT_QUARTERS,
            format!("the default: {DEFAULT_QUARTERS}/4 of this machine's {mem} bytes of physical memory"),
        ),
        (None, None) => (u64::MAX, "the address space".to_string()),
    };
    match hard {
        Some(h) if h < want => (
            h,
            format!("this machine's physical memory and swap, less than {source}"),
        ),
        _ => (want.min(isize::MAX as u64), source),
    }
}

/// The default budget, [`DEFAULT_QUARTERS`]/4 of the physical memory, if it is known.
pub fn default_budget() -> Option<u64> {
    physical_memory().map(|(mem, _)| mem / 4 * DEFAULT_QUARTERS)
}

/// `MemTotal` and `SwapTotal` of `/proc/meminfo` in bytes, read once; `None` where it cannot
/// be read.
fn physical_memory() -> Option<(u64, u64)> {
    static MEM: OnceLock<Option<(u64, u64)>> = OnceLock::new();
    *MEM.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.starts_with(name))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib.saturating_mul(1024))
        };
        Some((field("MemTotal:")?, field("SwapTotal:").unwrap_or(0)))
    })
}

impl Program {
    /// The memory one run needs (see [`Footprint`]).
    pub fn footprint(&self) -> Footprint {
        Footprint {
            arena: bytes(self.memory.as_ref().map_or(0, |m| m.arena_len)),
            weights: self
                .weights
                .iter()
                .fold(0u64, |n, w| n.saturating_add(bytes(w.len))),
            workspace: bytes(self.workspace_len()),
        }
    }

    /// Checks that one run fits in the memory budget (the target's `memory_budget`, else the
    /// default), and in the address space; the error names the graph, each part and the budget.
    pub fn check_footprint(&self) -> Result<(), PluginError> {
        let f = self.footprint();
        let (limit, source) = budget(self.target.memory_budget);
        if f.total() > limit {
            return Err(PluginError::invalid(format!(
                "graph '{}' needs {} bytes of memory to run (arena {} + weights {} + workspace {}), \
                 more than the memory budget of {limit} bytes ({source}); compile for a smaller \
                 batch_size or sample_size, or raise memory_budget",
                self.name,
                f.total(),
                f.arena,
                f.weights,
                f.workspace
            )));
        }
        Ok(())
    }
}
