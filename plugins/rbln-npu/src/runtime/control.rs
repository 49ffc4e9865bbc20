//! How a loaded executable runs: on which device, under which time limit, with or without a
//! profile. The step loop ([`run_steps`]) runs on the device's pool and checks the limit at
//! every step boundary.

use super::profile;
use super::{run_step, Sources};
use crate::device::{current_affinity, CpuDevice};
use crate::program::Program;
use plugin_api::PluginError;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per-executable run options, fixed when it is loaded ([`RunOptions::from_json`]).
#[derive(Debug, Default)]
pub struct RunOptions {
    /// The device whose pool runs the steps; none: the caller's rayon pool.
    pub device: Option<Arc<CpuDevice>>,
    /// A run that is still going at a step boundary after this long stops with a timeout.
    pub timeout: Option<Duration>,
    /// Per-step profile of this executable's runs (`profile: true`).
    pub profile: Option<Profile>,
    /// Names the executable in messages and profiles (e.g. `vae decoder`); default the graph's
    /// name.
    pub label: Option<String>,
    /// The affinity of the thread that ran the last run's steps.
    last_affinity: Mutex<Option<Vec<usize>>>,
}

/// Accumulated per-step times of a profiled executable.
#[derive(Debug, Default)]
pub struct Profile {
    totals: Mutex<(u64, Vec<Duration>)>,
}

impl RunOptions {
    /// Parses load options `{"device": 1, "timeout": 0.5, "profile": true, "label": "..."}`
    /// (all optional; `device` is looked up by the caller and passed as `device`).
    pub fn from_json(
        options_json: &str,
        device: Option<Arc<CpuDevice>>,
    ) -> Result<RunOptions, PluginError> {
        let bad = |m: String| PluginError::invalid(format!("load options: {m}"));
        let m = parse_object(options_json).map_err(bad)?;
        let mut o = RunOptions {
            device,
            ..RunOptions::default()
        };
        for (k, v) in &m {
            match k.as_str() {
                "device" => {}
                "timeout" => o.timeout = Some(seconds(v).map_err(bad)?),
                "profile" => {
                    let on = v
                        .as_bool()
                        .ok_or_else(|| bad(format!("profile must be true or false, got {v}")))?;
                    o.profile = on.then(Profile::default);
                }
                "label" => {
                    let s = v
                        .as_str()
                        .ok_or_else(|| bad(format!("label must be a string, got {v}")))?;
                    o.label = Some(s.to_string());
                }
                other => {
                    return Err(bad(format!(
                        "unknown option '{other}' (the options are device, timeout, profile \
                         and label)"
                    )))
                }
            }
        }
        Ok(o)
    }

    /// Run options `{"timeout": seconds, "any_shape": bool}`, both optional.
    pub fn per_run(options_json: &str) -> Result<PerRun, PluginError> {
        let bad = |m: String| PluginError::invalid(format!("run options: {m}"));
        let m = parse_object(options_json).map_err(bad)?;
        let mut run = PerRun::default();
        for (k, v) in &m {
            match k.as_str() {
                "timeout" => run.timeout = Some(seconds(v).map_err(bad)?),
                "any_shape" => {
                    run.any_shape = v
                        .as_bool()
                        .ok_or_else(|| bad(format!("any_shape must be true or false, got {v}")))?
                }
                _ => {
                    return Err(bad(format!(
                        "unknown option '{k}' (the options are timeout and any_shape)"
                    )))
                }
            }
        }
        Ok(run)
    }

    /// The `device` of load options, if given.
    pub fn device_id(options_json: &str) -> Result<Option<u64>, PluginError> {
        let m = parse_object(options_json)
            .map_err(|m| PluginError::invalid(format!("load options: {m}")))?;
        match m.get("device") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                PluginError::invalid(format!(
                    "load options: device must be a device index (an integer >= 0), got {v}"
                ))
            }),
        }
    }

    /// Where and how this executable runs, with its profile totals: a JSON object.
    pub fn to_json(&self, p: &Program) -> Value {
        let mut m = Map::new();
        if let Some(d) = &self.device {
            m.insert("device".into(), json!(d.id));
            m.insert("cores".into(), json!(d.cores));
            if let Ok(t) = d.thread_affinities() {
                m.insert("thread_affinities".into(), json!(t));
            }
        }
        if let Ok(last) = self.last_affinity.lock() {
            if let Some(a) = &*last {
                m.insert("last_run_affinity".into(), json!(a));
            }
        }
        if let Some(t) = self.timeout {
            m.insert("timeout_s".into(), json!(t.as_secs_f64()));
        }
        if let Some(prof) = &self.profile {
            let (runs, totals) = prof.totals.lock().map(|g| g.clone()).unwrap_or_default();
            let steps: Vec<Value> = p
                .steps
                .iter()
                .zip(totals.iter().chain(std::iter::repeat(&Duration::ZERO)))
                .map(|(s, t)| {
                    json!({"step": s.name, "kernel": profile::kernel_label(p, s),
                           "total_s": t.as_secs_f64()})
                })
                .collect();
            let total: f64 = totals.iter().map(Duration::as_secs_f64).sum();
            m.insert(
                "profile".into(),
                json!({"runs": runs, "total_s": total, "steps": steps}),
            );
        }
        Value::Object(m)
    }

    fn name<'a>(&'a self, p: &'a Program) -> &'a str {
        self.label.as_deref().unwrap_or(&p.name)
    }
}

/// A timeout in seconds: a number from 0 to 10^9.
fn seconds(v: &Value) -> Result<Duration, String> {
    v.as_f64()
        .filter(|t| (0.0..=1e9).contains(t))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("timeout must be seconds >= 0, got {v}"))
}

fn parse_object(text: &str) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("must be a JSON object, got {other}")),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// The options of one run ([`RunOptions::per_run`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct PerRun {
    /// Replaces the load-time timeout.
    pub timeout: Option<Duration>,
    /// Plans a shape no compiled plan has on first use.
    pub any_shape: bool,
}

/// Runs every step of `src.program` on the device's pool (or the caller's), stopping with a
/// timeout error at the first step boundary `limit` or more after `start`.
/// With a profile (or `MLHOST_PROFILE`), times each step and prints the table to stderr.
pub(crate) fn run_steps(
    src: &Sources<'_>,
    arena: &mut [f32],
    workspace: &mut [f32],
    opts: &RunOptions,
    (start, limit): (Instant, Option<Duration>),
) -> Result<(), PluginError> {
    match &opts.device {
        Some(d) => d.install(move || steps(src, arena, workspace, opts, (start, limit)))?,
        None => steps(src, arena, workspace, opts, (start, limit)),
    }
}

fn steps(
    src: &Sources<'_>,
    arena: &mut [f32],
    workspace: &mut [f32],
    opts: &RunOptions,
    (start, limit): (Instant, Option<Duration>),
) -> Result<(), PluginError> {
    let p = src.program;
    if opts.device.is_some() {
        if let Ok(mut last) = opts.last_affinity.lock() {
            *last = Some(current_affinity());
        }
    }
    let timed = opts.profile.is_some() || profile::enabled();
    let mut times = Vec::with_capacity(if timed { p.steps.len() } else { 0 });
    for s in 0..p.steps.len() {
        if let Some(limit) = limit {
            if start.elapsed() >= limit {
                return Err(PluginError::timeout(format!(
                    "{} exceeded its timeout of {} s (stopped before step {} of {})",
                    opts.name(p),
                    limit.as_secs_f64(),
                    s + 1,
                    p.steps.len()
                )));
            }
        }
        if timed {
            let t = Instant::now();
            run_step(s, src, arena, workspace);
            times.push(t.elapsed());
        } else {
            run_step(s, src, arena, workspace);
        }
    }
    if timed {
        let table = profile::report(p, &times);
        match &opts.profile {
            Some(prof) => {
                eprint!("profile of {}:\n{table}", opts.name(p));
                if let Ok(mut g) = prof.totals.lock() {
                    g.0 += 1;
                    g.1.resize(p.steps.len(), Duration::ZERO);
                    for (acc, t) in g.1.iter_mut().zip(&times) {
                        *acc += *t;
                    }
                }
            }
            None => eprint!("{table}"),
        }
    }
    Ok(())
}
