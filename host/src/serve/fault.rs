//! A test hook for the fault tests. With `MLHOST_INJECT_PANIC=<served model>` (e.g.
//! `vae.decode`) in the server's environment, the first batch of that model panics inside its
//! execution, as a bug in the host would: only that batch's requests may fail, and the worker
//! must serve the next one. With `<served model>@worker`, the first batch's worker itself dies
//! (a panic outside the batch): the model must then report not ready and refuse requests
//! instead of queueing them. The variable is read once; unset, it costs one atomic load per
//! batch.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::OnceLock;

/// The environment variable naming the served model whose first batch panics.
pub const INJECT_PANIC: &str = "MLHOST_INJECT_PANIC";

static TARGET: OnceLock<Option<String>> = OnceLock::new();
static FIRED: AtomicBool = AtomicBool::new(false);

fn fire(point: &str) {
    let target = TARGET.get_or_init(|| std::env::var(INJECT_PANIC).ok());
    if target.as_deref() == Some(point) && !FIRED.swap(true, SeqCst) {
        panic!("injected panic ({INJECT_PANIC}={point})");
    }
}

/// Inside a batch's execution of `model`.
pub fn in_batch(model: &str) {
    fire(model);
}

/// In `model`'s worker loop, outside any batch.
pub fn in_worker(model: &str) {
    fire(&format!("{model}@worker"));
}
