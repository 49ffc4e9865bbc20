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
use std::time::Instant;

#[derive(Default)]
struct State {
    stage: String,
    bar: Option<ProgressBar>,
    stages_seen: usize,
    /// The part being worked on (`encoder` of `encoder: pass FoldConstants`) and its start.
    part: Option<(String, Instant)>,
    /// Finished parts' lines, when capturing (tests).
    captured: Vec<String>,
}

/// One progress bar on stderr whose message is the current stage, and one line per finished
/// part (`encoder: 0.31 s`; the part is what precedes `: ` in a stage name, e.g. the compiler's
/// `encoder: pass FoldConstants`). When stderr is not a terminal (a CI log, a pipe) only the
/// lines are printed.
#[derive(Clone, Default)]
pub struct BarProgress {
    state: Arc<Mutex<State>>,
    hidden: bool,
    capture: bool,
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

    /// Prints the last part's line and removes the bar from the screen.
    pub fn finish(&self) {
        let mut state = self.lock();
        self.end_part(&mut state);
        if let Some(bar) = state.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// The lines printed for finished parts (a capturing progress only).
    #[cfg(test)]
    fn captured(&self) -> Vec<String> {
        self.lock().captured.clone()
    }

    fn end_part(&self, state: &mut State) {
        let Some((part, started)) = state.part.take() else {
            return;
        };
        let line = format!("{part}: {:.2} s", started.elapsed().as_secs_f64());
        if self.capture {
            state.captured.push(line);
        } else if !self.hidden {
            match &state.bar {
                Some(bar) if std::io::stderr().is_terminal() => bar.println(line),
                _ => eprintln!("{line}"),
            }
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
        if state.stage != stage {
            tracing::debug!("{stage}");
            let part = stage.split_once(": ").map_or(stage, |(p, _)| p);
            if state.part.as_ref().is_none_or(|(p, _)| p != part) {
                self.end_part(&mut state);
                state.part = Some((part.to_string(), Instant::now()));
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

    #[test]
    fn one_line_per_part_with_its_time() {
        let progress = BarProgress {
            hidden: true,
            capture: true,
            ..BarProgress::default()
        };
        let boxed = progress.to_box();
        boxed.report("load weights".into(), 0, 1);
        boxed.report("load weights".into(), 1, 1);
        for pass in ["validate", "pass FoldConstants", "pass PlanMemory"] {
            boxed.report(format!("encoder: {pass}").as_str().into(), 0, 3);
        }
        boxed.report("decoder: validate".into(), 0, 1);
        boxed.report("decoder: pass PlanMemory".into(), 1, 1);
        progress.finish();
        let lines = progress.captured();
        let parts: Vec<&str> = lines.iter().filter_map(|l| l.split(": ").next()).collect();
        assert_eq!(parts, ["load weights", "encoder", "decoder"], "{lines:?}");
        assert!(lines.iter().all(|l| l.ends_with(" s")), "{lines:?}");
        assert_eq!(progress.stages_seen(), 6);
    }
}
