//! A [`Progress`] implementation that draws indicatif bars on stderr.
//!
//! Plugins call it across the FFI boundary, possibly from several threads: it must never panic
//! (a panic there would abort the process), so every body runs under `catch_unwind` and a
//! poisoned lock is recovered.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plugin_api::abi_stable::sabi_trait::TD_Opaque;
use plugin_api::abi_stable::std_types::RStr;
use plugin_api::{Progress, ProgressBox, Progress_TO};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    stage: String,
    bar: Option<ProgressBar>,
    stages_seen: usize,
}

/// Progress bars on stderr, one per stage; hidden when stderr is not a terminal.
#[derive(Clone, Default)]
pub struct BarProgress {
    state: Arc<Mutex<State>>,
    hidden: bool,
}

impl BarProgress {
    /// Bars drawn on stderr (indicatif hides them when stderr is not a terminal).
    pub fn stderr() -> BarProgress {
        BarProgress::default()
    }

    /// A progress that records stages but never draws.
    pub fn hidden() -> BarProgress {
        BarProgress {
            hidden: true,
            ..BarProgress::default()
        }
    }

    /// A boxed trait object sharing this progress's state, to pass to plugins.
    pub fn to_box(&self) -> ProgressBox {
        Progress_TO::from_value(self.clone(), TD_Opaque)
    }

    /// The number of distinct stages reported so far.
    pub fn stages_seen(&self) -> usize {
        self.lock().stages_seen
    }

    /// Finishes the current bar, leaving it on screen.
    pub fn finish(&self) {
        if let Some(bar) = self.lock().bar.take() {
            bar.finish();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn new_bar(&self, stage: &str, total: u64) -> ProgressBar {
        let target = if self.hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} ({elapsed})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(stage.to_string());
        bar
    }

    fn update(&self, stage: &str, done: u64, total: u64) {
        let mut state = self.lock();
        if state.bar.is_none() || state.stage != stage {
            if let Some(old) = state.bar.take() {
                old.finish();
            }
            tracing::info!("{stage}");
            state.stage = stage.to_string();
            state.stages_seen += 1;
            state.bar = Some(self.new_bar(stage, total));
        }
        if let Some(bar) = &state.bar {
            bar.set_length(total);
            bar.set_position(done.min(total));
        }
    }
}

impl Progress for BarProgress {
    fn report(&self, stage: RStr<'_>, done: u64, total: u64) {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            self.update(stage.as_str(), done, total)
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_counted_through_the_trait_object() {
        let progress = BarProgress::hidden();
        let boxed = progress.to_box();
        boxed.report("compile encoder".into(), 0, 3);
        boxed.report("compile encoder".into(), 3, 3);
        boxed.report("compile decoder".into(), 1, 2);
        assert_eq!(progress.stages_seen(), 2);
        progress.finish();
    }
}
