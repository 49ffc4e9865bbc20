//! A resolved pipeline: typed steps in a valid run order, checked for undefined tensors,
//! cycles, unknown ops, methods and models, port names and value types.

use super::ops::{op_sig, Op, Scaling, OPS};
use super::spec::{Family, Kind, PortType, StepEntry};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// What a step runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Action {
    /// A model method.
    Model {
        /// The `models` entry.
        model: String,
        /// `encode` or `decode`.
        method: String,
    },
    /// A built-in op.
    Op(Op),
}

/// A resolved step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Its name.
    pub name: String,
    /// What it runs.
    #[serde(flatten)]
    pub action: Action,
    /// Port -> tensor read.
    pub inputs: BTreeMap<String, String>,
    /// Port -> tensor written.
    pub outputs: BTreeMap<String, String>,
}

/// A resolved pipeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pipeline {
    /// Its name.
    pub name: String,
    /// The optimum-rbln pipeline class it follows, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// Inputs (tensor names) and their types.
    pub inputs: BTreeMap<String, PortType>,
    /// Outputs (tensor names) and their types.
    pub outputs: BTreeMap<String, PortType>,
    /// Steps, in an order where every step comes after the steps it reads from.
    pub steps: Vec<Step>,
}

/// A model method's ports: `(inputs, outputs)`.
pub fn method_ports(method: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    match method {
        "encode" => Some((&["x"], &["mean", "logvar"])),
        "decode" => Some((&["z"], &["sample"])),
        _ => None,
    }
}

/// What the graph builder needs to know about a declared model.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    /// Whether its encoder is compiled.
    pub uses_encoder: bool,
    /// Image channels.
    pub in_channels: usize,
    /// Its latent scaling fields.
    pub scaling: ScalingFields,
}

/// The latent scaling fields of a VAE's config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingFields {
    /// `scaling_factor`.
    pub scaling_factor: f64,
    /// `shift_factor`.
    pub shift_factor: Option<f64>,
    /// `latents_mean`.
    pub latents_mean: Option<Vec<f64>>,
    /// `latents_std`.
    pub latents_std: Option<Vec<f64>>,
}

/// A graph error: the message and where to point (the step, then the key and value in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    /// The step at fault (None: the pipeline itself).
    pub step: Option<String>,
    /// The key and value to point at within the step (or pipeline).
    pub at: Option<(String, String)>,
    /// What is wrong.
    pub message: String,
}

fn err(step: Option<&str>, at: Option<(&str, &str)>, message: String) -> GraphError {
    GraphError {
        step: step.map(str::to_string),
        at: at.map(|(k, v)| (k.to_string(), v.to_string())),
        message,
    }
}

/// Builds and checks a pipeline's step graph.
pub fn build(
    name: &str,
    kind: Option<Kind>,
    default_model: Option<&str>,
    inputs: BTreeMap<String, PortType>,
    outputs: BTreeMap<String, PortType>,
    entries: &[StepEntry],
    models: &BTreeMap<String, ModelFacts>,
) -> Result<Pipeline, GraphError> {
    let mut steps = Vec::with_capacity(entries.len());
    let mut names = BTreeSet::new();
    for s in entries {
        if !names.insert(s.name.as_str()) {
            return Err(err(
                Some(&s.name),
                None,
                format!("step \"{}\" is defined twice", s.name),
            ));
        }
        steps.push(resolve_step(s, kind, default_model, models)?);
    }

    // Who writes each tensor, and its type.
    let mut producer: BTreeMap<&str, (&str, PortType)> = BTreeMap::new();
    for (t, ty) in &inputs {
        producer.insert(t, ("the pipeline input", *ty));
    }
    for s in &steps {
        for (port, t) in &s.outputs {
            let ty = if s.action == Action::Op(Op::ImageEncode) {
                PortType::Image
            } else {
                PortType::Tensor
            };
            if let Some((other, _)) = producer.insert(t, (&s.name, ty)) {
                return Err(err(
                    Some(&s.name),
                    Some((port, t)),
                    format!(
                        "step \"{}\": tensor \"{t}\" is already written by {}",
                        s.name,
                        describe(other)
                    ),
                ));
            }
        }
    }
    for s in &steps {
        for (port, t) in &s.inputs {
            let Some((_, ty)) = producer.get(t.as_str()) else {
                return Err(err(
                    Some(&s.name),
                    Some((port, t)),
                    format!(
                        "step \"{}\" reads tensor \"{t}\" (port `{port}`), which no step writes \
                         and is not a pipeline input (inputs: {})",
                        s.name,
                        list(inputs.keys())
                    ),
                ));
            };
            let wants = if matches!(s.action, Action::Op(Op::ImageDecode { .. })) {
                PortType::Image
            } else {
                PortType::Tensor
            };
            if *ty != wants {
                return Err(err(
                    Some(&s.name),
                    Some((port, t)),
                    format!(
                        "step \"{}\": port `{port}` takes {}, but \"{t}\" is {}",
                        s.name,
                        type_name(wants),
                        type_name(*ty)
                    ),
                ));
            }
        }
    }
    for (t, ty) in &outputs {
        match producer.get(t.as_str()) {
            None => {
                return Err(err(
                    None,
                    Some((t, "")),
                    format!("pipeline \"{name}\": output \"{t}\" is written by no step"),
                ))
            }
            Some((_, got)) if got != ty => {
                return Err(err(
                    None,
                    Some((t, "")),
                    format!(
                        "pipeline \"{name}\": output \"{t}\" is declared {} but is {}",
                        type_name(*ty),
                        type_name(*got)
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    let steps = order(steps, &inputs)?;
    Ok(Pipeline {
        name: name.to_string(),
        kind,
        inputs,
        outputs,
        steps,
    })
}

fn describe(producer: &str) -> String {
    if producer == "the pipeline input" {
        producer.to_string()
    } else {
        format!("step \"{producer}\"")
    }
}

fn type_name(t: PortType) -> &'static str {
    match t {
        PortType::Image => "encoded image bytes (type image)",
        PortType::Tensor => "a tensor (type tensor)",
    }
}

fn list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = items.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Kahn's order; the steps left over lie on or behind a cycle.
fn order(steps: Vec<Step>, inputs: &BTreeMap<String, PortType>) -> Result<Vec<Step>, GraphError> {
    let mut ready: BTreeSet<&str> = inputs.keys().map(String::as_str).collect();
    let mut done = vec![false; steps.len()];
    let mut ordered = Vec::with_capacity(steps.len());
    loop {
        let next = (0..steps.len())
            .find(|&i| !done[i] && steps[i].inputs.values().all(|t| ready.contains(t.as_str())));
        let Some(i) = next else { break };
        done[i] = true;
        ready.extend(steps[i].outputs.values().map(String::as_str));
        ordered.push(i);
    }
    if ordered.len() < steps.len() {
        let stuck: Vec<&str> = (0..steps.len())
            .filter(|&i| !done[i])
            .map(|i| steps[i].name.as_str())
            .collect();
        return Err(err(
            Some(stuck[0]),
            None,
            format!(
                "steps form a cycle: {} each wait for a tensor written by another of them",
                stuck.join(", ")
            ),
        ));
    }
    let mut slots: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    Ok(ordered
        .into_iter()
        .filter_map(|i| slots[i].take())
        .collect())
}

fn resolve_step(
    s: &StepEntry,
    kind: Option<Kind>,
    default_model: Option<&str>,
    models: &BTreeMap<String, ModelFacts>,
) -> Result<Step, GraphError> {
    let step = Some(s.name.as_str());
    let (action, ins, outs, params): (Action, &[&str], &[&str], &[&str]) = match (&s.op, &s.method)
    {
        (Some(_), Some(_)) | (None, None) => {
            return Err(err(
                step,
                None,
                format!(
                    "step \"{}\" must have either `op` (a built-in op) or `model` and \
                         `method`",
                    s.name
                ),
            ))
        }
        (None, Some(method)) => {
            let model = s.model.as_deref().or(default_model).ok_or_else(|| {
                err(
                    step,
                    Some(("method", method)),
                    format!("step \"{}\": `method` needs a `model`", s.name),
                )
            })?;
            let facts = declared(models, model, step)?;
            let (ins, outs) = method_ports(method).ok_or_else(|| {
                err(
                    step,
                    Some(("method", method)),
                    format!(
                        "step \"{}\": model \"{model}\" has no method \"{method}\" (methods: \
                             encode, decode)",
                        s.name
                    ),
                )
            })?;
            if method == "encode" && !facts.uses_encoder {
                return Err(err(
                    step,
                    Some(("method", method)),
                    format!(
                        "step \"{}\": model \"{model}\" is compiled without its encoder \
                             (uses_encoder: false), so it has no method \"encode\"",
                        s.name
                    ),
                ));
            }
            let action = Action::Model {
                model: model.to_string(),
                method: method.clone(),
            };
            (action, ins, outs, &[])
        }
        (Some(op), None) => {
            if let Some(m) = &s.model {
                if op_sig(op).is_some_and(|o| !o.params.contains(&"model")) {
                    return Err(err(
                        step,
                        Some(("model", m)),
                        format!(
                            "step \"{}\": op {op} takes no `model` (did you mean `method`?)",
                            s.name
                        ),
                    ));
                }
            }
            let sig = op_sig(op).ok_or_else(|| {
                let known: Vec<&str> = OPS.iter().map(|o| o.name).collect();
                err(
                    step,
                    Some(("op", op)),
                    format!(
                        "step \"{}\": unknown op \"{op}\" (ops: {})",
                        s.name,
                        known.join(", ")
                    ),
                )
            })?;
            let op = make_op(s, sig.name, kind, default_model, models)?;
            (Action::Op(op), sig.inputs, sig.outputs, sig.params)
        }
    };
    if !s.params.is_empty() && params.is_empty() {
        return Err(err(
            step,
            Some(("params", "")),
            format!("step \"{}\": takes no params", s.name),
        ));
    }
    for key in s.params.keys() {
        if !params.contains(&key.as_str()) {
            return Err(err(
                step,
                Some((key, "")),
                format!(
                    "step \"{}\": unknown param `{key}` (params: {})",
                    s.name,
                    params.join(", ")
                ),
            ));
        }
    }
    for port in ins {
        if !s.inputs.contains_key(*port) {
            return Err(err(
                step,
                Some(("inputs", "")),
                format!(
                    "step \"{}\": input port `{port}` is not connected (ports: {})",
                    s.name,
                    ins.join(", ")
                ),
            ));
        }
    }
    for (port, value) in s.inputs.iter() {
        if !ins.contains(&port.as_str()) {
            return Err(err(
                step,
                Some((port, value)),
                format!(
                    "step \"{}\": unknown input port `{port}` (ports: {})",
                    s.name,
                    ins.join(", ")
                ),
            ));
        }
    }
    for (port, value) in s.outputs.iter() {
        if !outs.contains(&port.as_str()) {
            return Err(err(
                step,
                Some((port, value)),
                format!(
                    "step \"{}\": unknown output port `{port}` (ports: {})",
                    s.name,
                    outs.join(", ")
                ),
            ));
        }
    }
    Ok(Step {
        name: s.name.clone(),
        action,
        inputs: s.inputs.clone(),
        outputs: s.outputs.clone(),
    })
}

fn declared<'a>(
    models: &'a BTreeMap<String, ModelFacts>,
    model: &str,
    step: Option<&str>,
) -> Result<&'a ModelFacts, GraphError> {
    models.get(model).ok_or_else(|| {
        err(
            step,
            Some(("model", model)),
            format!(
                "step \"{}\": model \"{model}\" is not declared in models (declared: {})",
                step.unwrap_or(""),
                list(models.keys())
            ),
        )
    })
}

fn make_op(
    s: &StepEntry,
    name: &str,
    kind: Option<Kind>,
    default_model: Option<&str>,
    models: &BTreeMap<String, ModelFacts>,
) -> Result<Op, GraphError> {
    let step = Some(s.name.as_str());
    let uint = |key: &str| -> Result<Option<u64>, GraphError> {
        match s.params.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                err(
                    step,
                    Some((key, "")),
                    format!(
                        "step \"{}\": params.{key} must be a non-negative integer, got {v}",
                        s.name
                    ),
                )
            }),
        }
    };
    let model = || -> Result<(&str, &ModelFacts), GraphError> {
        let m = match s.params.get("model") {
            Some(Value::String(m)) => m.as_str(),
            Some(v) => {
                return Err(err(
                    step,
                    Some(("model", "")),
                    format!(
                        "step \"{}\": params.model must be a model name, got {v}",
                        s.name
                    ),
                ))
            }
            None => s.model.as_deref().or(default_model).ok_or_else(|| {
                err(
                    step,
                    None,
                    format!("step \"{}\": {name} needs params.model", s.name),
                )
            })?,
        };
        Ok((m, declared(models, m, step)?))
    };
    Ok(match name {
        "image_decode" => {
            let channels = match uint("channels")? {
                Some(c) => c as usize,
                None => default_model
                    .and_then(|m| models.get(m))
                    .map_or(3, |f| f.in_channels),
            };
            if channels != 1 && channels != 3 {
                return Err(err(
                    step,
                    Some(("channels", "")),
                    format!(
                        "step \"{}\": image_decode gives 1 or 3 channels, not {channels}",
                        s.name
                    ),
                ));
            }
            Op::ImageDecode { channels }
        }
        "image_encode" => Op::ImageEncode,
        "normalize" => Op::Normalize,
        "denormalize" => Op::Denormalize,
        "latent_sample" => Op::LatentSample {
            seed: uint("seed")?.unwrap_or(0),
        },
        "latent_mode" => Op::LatentMode,
        "mask_prepare" => Op::MaskPrepare,
        "mask_image" => Op::MaskImage,
        "latent_scale" | "latent_unscale" => {
            let (model_name, facts) = model()?;
            let family = match s.params.get("family") {
                Some(v) => v.as_str().and_then(Family::from_name).ok_or_else(|| {
                    err(
                        step,
                        Some(("family", "")),
                        format!(
                            "step \"{}\": params.family must be sd, sdxl or sd3, got {v}",
                            s.name
                        ),
                    )
                })?,
                None => kind.map(Kind::family).ok_or_else(|| {
                    err(
                        step,
                        None,
                        format!(
                            "step \"{}\": {name} needs params.family (sd, sdxl, sd3) in a \
                             pipeline without `kind`",
                            s.name
                        ),
                    )
                })?,
            };
            let f = &facts.scaling;
            if family == Family::Sd3 && f.shift_factor.is_none() {
                return Err(err(
                    step,
                    None,
                    format!(
                        "step \"{}\": sd3 latent scaling subtracts shift_factor, but the \
                         config.json of model \"{model_name}\" has none",
                        s.name
                    ),
                ));
            }
            let sdxl = family == Family::Sdxl;
            let scaling = Scaling {
                family,
                scaling_factor: f.scaling_factor,
                shift_factor: f.shift_factor.filter(|_| family == Family::Sd3),
                latents_mean: f.latents_mean.clone().filter(|_| sdxl),
                latents_std: f.latents_std.clone().filter(|_| sdxl),
            };
            if name == "latent_scale" {
                Op::LatentScale(scaling)
            } else {
                Op::LatentUnscale(scaling)
            }
        }
        other => {
            return Err(err(
                step,
                Some(("op", other)),
                format!("step \"{}\": op {other} is not implemented", s.name),
            ))
        }
    })
}
