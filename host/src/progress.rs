//! A [`Progress`] implementation that draws an indicatif bar on stderr.
//!
//! Plugins call it across the FFI boundary, possibly from several threads: it must never panic
//! (a panic there would abort the process), so every body runs under `catch_unwind` and a
//! poisoned lock is recovered.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plugin_api::abi_stable::sabi_trait::TD_Opaque;
use plugin_api::abi_stable::std_types::RStr;
use plugin_api::{Progress, ProgressBox, Progress_TO};
use std::io::IsTerminal;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    stage: String,
    bar: Option<ProgressBar>,
    stages_seen: usize,
    started: Option<std::time::Instant>,
}

/// One progress bar on stderr whose message is the current stage. When stderr is not a terminal
/// (a CI log, a pipe) each new stage is printed as one line instead.
#[derive(Clone, Default)]
pub struct BarProgress {
    state: Arc<Mutex<State>>,
    hidden: bool,
}

impl BarProgress {
    /// A bar drawn on stderr (indicatif hides it when stderr is not a terminal).
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

    /// The number of stage changes reported so far.
    pub fn stages_seen(&self) -> usize {
        self.lock().stages_seen
    }

    /// Removes the bar from the screen.
    pub fn finish(&self) {
        if let Some(bar) = self.lock().bar.take() {
            bar.finish_and_clear();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn new_bar(&self) -> ProgressBar {
        let target = if self.hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        if let Ok(style) =
            ProgressStyle::with_template("[{elapsed_precise}] [{bar:30}] {pos:>4}/{len:4} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    }

    fn update(&self, stage: &str, done: u64, total: u64) {
        let mut state = self.lock();
        if state.bar.is_none() {
            state.bar = Some(self.new_bar());
        }
        let started = *state.started.get_or_insert_with(std::time::Instant::now);
        if state.stage != stage {
            tracing::debug!("{stage}");
            if !self.hidden && !std::io::stderr().is_terminal() {
                eprintln!("[{:>7.2}s] {stage}", started.elapsed().as_secs_f64());
            }
            state.stage = stage.to_string();
            state.stages_seen += 1;
            if let Some(bar) = &state.bar {
                bar.set_message(stage.to_string());
            }
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
