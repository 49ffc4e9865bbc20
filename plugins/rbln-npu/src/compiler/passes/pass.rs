//! The pass interface.

use crate::program::Program;
use plugin_api::PluginError;

/// Progress callback: `(stage, done, total)`.
pub type ProgressFn<'a> = &'a dyn Fn(&str, u64, u64);

/// A program-to-program transformation. The driver re-validates the program after each pass.
pub trait Pass {
    /// The pass name used in errors, e.g. `PackConvWeights`.
    fn name(&self) -> &'static str;
    /// Transforms `p` in place.
    fn run(&self, p: &mut Program, progress: ProgressFn<'_>) -> Result<(), PluginError>;
}
