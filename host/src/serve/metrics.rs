//! Per-model counters, rendered as Prometheus text at `/metrics` (prefix `mlhost_`).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Failure reasons counted (see [`super::error::ServeError::reason`]).
pub const REASONS: [&str; 5] = ["INVALID", "NOT_FOUND", "REJECTED", "TIMEOUT", "BACKEND"];

/// Counters of one served (OIP) model.
#[derive(Debug, Default)]
pub struct ModelMetrics {
    /// Successful requests.
    pub success: AtomicU64,
    /// Failed requests, by index in [`REASONS`].
    pub failure: [AtomicU64; REASONS.len()],
    /// Batch items inferred (excluding padding).
    pub inference_count: AtomicU64,
    /// Batch executions.
    pub exec_count: AtomicU64,
    /// Cumulative end-to-end request time of successful requests.
    pub request_us: AtomicU64,
    /// Cumulative time requests waited in the queue.
    pub queue_us: AtomicU64,
    /// Cumulative time executions took.
    pub compute_us: AtomicU64,
    /// Requests queued or executing.
    pub pending: AtomicI64,
    /// Executions by number of real (unpadded) items: index = items.
    pub batch_items: Mutex<Vec<u64>>,
}

impl ModelMetrics {
    /// Counts a failure.
    pub fn fail(&self, reason: &str) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.failure[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts one execution of `items` real items taking `us`.
    pub fn executed(&self, items: usize, us: u64) {
        self.exec_count.fetch_add(1, Relaxed);
        self.inference_count.fetch_add(items as u64, Relaxed);
        self.compute_us.fetch_add(us, Relaxed);
        let mut sizes = self.batch_items.lock().unwrap_or_else(|p| p.into_inner());
        if sizes.len() <= items {
            sizes.resize(items + 1, 0);
        }
        sizes[items] += 1;
    }
}

/// Renders the metrics of `models` (name, counters).
pub fn render<'a>(models: impl Iterator<Item = (&'a str, &'a ModelMetrics)> + Clone) -> String {
    let mut out = String::new();
    let scalar = |out: &mut String,
                  name: &str,
                  kind: &str,
                  help: &str,
                  get: &dyn Fn(&ModelMetrics) -> String| {
        let _ = writeln!(
            out,
            "# HELP mlhost_{name} {help}\n# TYPE mlhost_{name} {kind}"
        );
        for (model, m) in models.clone() {
            let _ = writeln!(
                out,
                "mlhost_{name}{{model=\"{model}\",version=\"1\"}} {}",
                get(m)
            );
        }
    };
    let load = |a: &AtomicU64| a.load(Relaxed).to_string();
    scalar(
        &mut out,
        "inference_request_success",
        "counter",
        "Successful inference requests.",
        &|m| load(&m.success),
    );
    let _ = writeln!(out, "# HELP mlhost_inference_request_failure Failed inference requests by reason.\n# TYPE mlhost_inference_request_failure counter");
    for (model, m) in models.clone() {
        for (i, reason) in REASONS.iter().enumerate() {
            let _ = writeln!(out, "mlhost_inference_request_failure{{model=\"{model}\",version=\"1\",reason=\"{reason}\"}} {}", m.failure[i].load(Relaxed));
        }
    }
    scalar(
        &mut out,
        "inference_count",
        "counter",
        "Batch items inferred, padding excluded.",
        &|m| load(&m.inference_count),
    );
    scalar(
        &mut out,
        "inference_exec_count",
        "counter",
        "Batch executions.",
        &|m| load(&m.exec_count),
    );
    scalar(
        &mut out,
        "inference_pending_request_count",
        "gauge",
        "Requests queued or executing.",
        &|m| m.pending.load(Relaxed).to_string(),
    );
    scalar(
        &mut out,
        "inference_request_duration_us",
        "counter",
        "Cumulative end-to-end duration of successful requests.",
        &|m| load(&m.request_us),
    );
    scalar(
        &mut out,
        "inference_queue_duration_us",
        "counter",
        "Cumulative time requests waited in the queue.",
        &|m| load(&m.queue_us),
    );
    scalar(
        &mut out,
        "inference_compute_infer_duration_us",
        "counter",
        "Cumulative duration of batch executions.",
        &|m| load(&m.compute_us),
    );
    let _ = writeln!(out, "# HELP mlhost_inference_batch_executions Batch executions by number of real items.\n# TYPE mlhost_inference_batch_executions counter");
    for (model, m) in models {
        let sizes = m.batch_items.lock().unwrap_or_else(|p| p.into_inner());
        for (items, count) in sizes.iter().enumerate().filter(|(_, c)| **c > 0) {
            let _ = writeln!(out, "mlhost_inference_batch_executions{{model=\"{model}\",version=\"1\",batch_size=\"{items}\"}} {count}");
        }
    }
    out
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The profile totals of models run with `activate_profiler` (`Model::runtime_json`, by served
/// model name): runs and seconds per part and device, and seconds per step.
pub fn render_profiles(runtimes: &[(&str, serde_json::Value)]) -> String {
    let mut runs = String::new();
    let mut steps = String::new();
    for (model, rt) in runtimes {
        let parts = rt.get("parts").and_then(|p| p.as_object());
        for (part, p) in parts.into_iter().flatten() {
            let replicas = p.get("replicas").and_then(|r| r.as_array());
            for r in replicas.into_iter().flatten() {
                let Some(prof) = r.get("profile") else {
                    continue;
                };
                let device = r.get("device").map_or("".into(), |d| d.to_string());
                let labels = format!(
                    "model=\"{}\",part=\"{}\",device=\"{}\"",
                    label(model),
                    label(part),
                    label(&device)
                );
                let n = prof.get("runs").and_then(|v| v.as_u64()).unwrap_or(0);
                let _ = writeln!(runs, "mlhost_profile_runs_total{{{labels}}} {n}");
                for s in prof
                    .get("steps")
                    .and_then(|s| s.as_array())
                    .into_iter()
                    .flatten()
                {
                    let text = |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or("");
                    let secs = s.get("total_s").and_then(|v| v.as_f64()).unwrap_or(0.0);
                    let _ = writeln!(
                        steps,
                        "mlhost_profile_step_seconds_total{{{labels},step=\"{}\",kernel=\"{}\"}} {secs}",
                        label(text("step")),
                        label(text("kernel"))
                    );
                }
            }
        }
    }
    if runs.is_empty() {
        return String::new();
    }
    format!(
        "# HELP mlhost_profile_runs_total Profiled runs (rbln_config.activate_profiler).\n\
         # TYPE mlhost_profile_runs_total counter\n{runs}\
         # HELP mlhost_profile_step_seconds_total Cumulative seconds per compiled step of profiled runs.\n\
         # TYPE mlhost_profile_step_seconds_total counter\n{steps}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_model_labels() {
        let m = ModelMetrics::default();
        m.success.fetch_add(3, Relaxed);
        m.fail("REJECTED");
        m.executed(3, 10);
        m.executed(1, 5);
        let text = render([("vae.decode", &m)].into_iter());
        assert!(
            text.contains("mlhost_inference_request_success{model=\"vae.decode\",version=\"1\"} 3"),
            "{text}"
        );
        assert!(text.contains("reason=\"REJECTED\"} 1"), "{text}");
        assert!(
            text.contains("mlhost_inference_exec_count{model=\"vae.decode\",version=\"1\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("mlhost_inference_count{model=\"vae.decode\",version=\"1\"} 4"),
            "{text}"
        );
        assert!(text.contains("batch_size=\"3\"} 1"), "{text}");
    }

    #[test]
    fn profiles_render_per_part_device_and_step() {
        let rt = serde_json::json!({"parts": {
            "decoder": {"replicas": [{"device": 1, "profile": {"runs": 2, "steps": [
                {"step": "conv_in", "kernel": "conv2d", "total_s": 0.5}]}}]},
            "encoder": {"replicas": [{"device": 0}]}}});
        let text = render_profiles(&[("vae", rt), ("other", serde_json::json!({}))]);
        assert!(
            text.contains(
                "mlhost_profile_runs_total{model=\"vae\",part=\"decoder\",device=\"1\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("part=\"decoder\",device=\"1\",step=\"conv_in\",kernel=\"conv2d\"} 0.5"),
            "{text}"
        );
        assert!(
            !text.contains("encoder") && !text.contains("other"),
            "{text}"
        );
        assert_eq!(render_profiles(&[("other", serde_json::json!({}))]), "");
    }
}
