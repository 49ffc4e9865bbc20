//! Runs a resolved pipeline: every step whose inputs are ready runs, the ready ones of a round
//! side by side on scoped threads, until the outputs are written.

use super::graph::{Action, Pipeline, Step};
use super::ops::Data;
use super::spec::PortType;
use plugin_api::{NamedTensor, Tensor};
use std::collections::BTreeMap;

/// Calls model methods for the executor.
pub trait Models: Sync {
    /// Runs `method` of `model` on named inputs; returns its named outputs.
    fn call(
        &self,
        model: &str,
        method: &str,
        inputs: Vec<NamedTensor>,
    ) -> Result<Vec<NamedTensor>, CallError>;
}

/// A model call that failed.
#[derive(Debug, Clone)]
pub struct CallError {
    /// Whether the caller's data is at fault.
    pub user: bool,
    /// Whether the model could not take the call now (its queue is full, the server is shutting
    /// down): the request may be retried.
    pub unavailable: bool,
    /// What went wrong (with its causes).
    pub message: String,
}

/// A pipeline run error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The caller's inputs do not match the pipeline's.
    #[error("pipeline \"{pipeline}\": {message}")]
    Input {
        /// The pipeline.
        pipeline: String,
        /// What is wrong.
        message: String,
    },
    /// A step failed.
    #[error("pipeline \"{pipeline}\": step \"{step}\" ({what}): {message}")]
    Step {
        /// The pipeline.
        pipeline: String,
        /// The step.
        step: String,
        /// The op or `model.method`.
        what: String,
        /// What went wrong.
        message: String,
        /// Whether the caller's data is at fault (a bad image, a wrong shape).
        user: bool,
        /// Whether a model could not take the call now (retry later).
        unavailable: bool,
    },
}

impl RunError {
    /// True if the input is at fault rather than the host.
    pub fn is_user_error(&self) -> bool {
        match self {
            RunError::Input { .. } => true,
            RunError::Step { user, .. } => *user,
        }
    }

    /// True if a model could not take a call now (a full queue, a server shutting down).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            RunError::Step {
                unavailable: true,
                ..
            }
        )
    }
}

fn what(step: &Step) -> String {
    match &step.action {
        Action::Model { model, method } => format!("{model}.{method}"),
        Action::Op(op) => op.name().to_string(),
    }
}

/// Checks the caller's inputs against the pipeline's declaration.
pub fn check_inputs(p: &Pipeline, inputs: &BTreeMap<String, Data>) -> Result<(), RunError> {
    let input_err = |message: String| RunError::Input {
        pipeline: p.name.clone(),
        message,
    };
    for (name, ty) in &p.inputs {
        match (inputs.get(name), ty) {
            (None, _) => return Err(input_err(format!("input \"{name}\" is missing"))),
            (Some(Data::Bytes(_)), PortType::Image) | (Some(Data::Tensor(_)), PortType::Tensor) => {
            }
            (Some(d), PortType::Image) => {
                return Err(input_err(format!(
                    "input \"{name}\" must be an encoded image (PNG or JPEG), got {}",
                    d.kind()
                )))
            }
            (Some(d), PortType::Tensor) => {
                return Err(input_err(format!(
                    "input \"{name}\" must be a tensor, got {}",
                    d.kind()
                )))
            }
        }
    }
    if let Some(extra) = inputs.keys().find(|k| !p.inputs.contains_key(*k)) {
        let known: Vec<&str> = p.inputs.keys().map(String::as_str).collect();
        return Err(input_err(format!(
            "unknown input \"{extra}\" (inputs: {})",
            known.join(", ")
        )));
    }
    Ok(())
}

fn run_step(
    p: &Pipeline,
    step: &Step,
    values: &BTreeMap<String, Data>,
    models: &dyn Models,
) -> Result<Vec<(String, Data)>, RunError> {
    let failed = |message: String, user: bool, unavailable: bool| RunError::Step {
        pipeline: p.name.clone(),
        step: step.name.clone(),
        what: what(step),
        message,
        user,
        unavailable,
    };
    let fail = |message: String, user: bool| failed(message, user, false);
    match &step.action {
        Action::Op(op) => {
            let sig =
                super::ops::op_sig(op.name()).ok_or_else(|| fail("unknown op".into(), false))?;
            let args: Vec<&Data> = sig
                .inputs
                .iter()
                .filter_map(|port| step.inputs.get(*port).and_then(|t| values.get(t)))
                .collect();
            let outs = op.run(&args).map_err(|m| fail(m, true))?;
            Ok(sig
                .outputs
                .iter()
                .zip(outs)
                .filter_map(|(port, d)| step.outputs.get(*port).map(|t| (t.clone(), d)))
                .collect())
        }
        Action::Model { model, method } => {
            let mut args = Vec::new();
            for (port, t) in &step.inputs {
                match values.get(t) {
                    Some(Data::Tensor(x)) => args.push(NamedTensor::new(port.as_str(), x.clone())),
                    Some(other) => {
                        return Err(fail(
                            format!("port `{port}` needs a tensor, \"{t}\" is {}", other.kind()),
                            true,
                        ))
                    }
                    None => return Err(fail(format!("tensor \"{t}\" is not ready"), false)),
                }
            }
            let outs = models
                .call(model, method, args)
                .map_err(|e| failed(e.message, e.user, e.unavailable))?;
            let mut written = Vec::new();
            for (port, t) in &step.outputs {
                let found: Option<Tensor> = outs
                    .iter()
                    .find(|o| o.name.as_str() == port)
                    .map(|o| o.tensor.clone());
                let tensor = found
                    .ok_or_else(|| fail(format!("the model returned no output `{port}`"), false))?;
                written.push((t.clone(), Data::Tensor(tensor)));
            }
            Ok(written)
        }
    }
}

/// Runs `p` on `inputs`; returns the declared outputs.
pub fn run(
    p: &Pipeline,
    inputs: BTreeMap<String, Data>,
    models: &dyn Models,
) -> Result<BTreeMap<String, Data>, RunError> {
    check_inputs(p, &inputs)?;
    let mut values = inputs;
    let mut pending: Vec<&Step> = p.steps.iter().collect();
    while !pending.is_empty() {
        let (ready, waiting): (Vec<&Step>, Vec<&Step>) = pending
            .into_iter()
            .partition(|s| s.inputs.values().all(|t| values.contains_key(t)));
        if ready.is_empty() {
            // Resolution orders the graph, so this means a step wrote less than declared.
            return Err(RunError::Input {
                pipeline: p.name.clone(),
                message: format!(
                    "steps {} wait for tensors nothing wrote",
                    waiting
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let results: Vec<Result<Vec<(String, Data)>, RunError>> = if ready.len() == 1 {
            vec![run_step(p, ready[0], &values, models)]
        } else {
            let vals = &values;
            std::thread::scope(|scope| {
                let handles: Vec<_> = ready
                    .iter()
                    .map(|s| scope.spawn(move || run_step(p, s, vals, models)))
                    .collect();
                handles
                    .into_iter()
                    .zip(&ready)
                    .map(|(h, s)| {
                        h.join().unwrap_or_else(|_| {
                            Err(RunError::Step {
                                pipeline: p.name.clone(),
                                step: s.name.clone(),
                                what: what(s),
                                message: "the step panicked".into(),
                                user: false,
                                unavailable: false,
                            })
                        })
                    })
                    .collect()
            })
        };
        for r in results {
            values.extend(r?);
        }
        pending = waiting;
    }
    let mut out = BTreeMap::new();
    for name in p.outputs.keys() {
        let v = values.remove(name).ok_or_else(|| RunError::Input {
            pipeline: p.name.clone(),
            message: format!("output \"{name}\" was not written"),
        })?;
        out.insert(name.clone(), v);
    }
    Ok(out)
}
