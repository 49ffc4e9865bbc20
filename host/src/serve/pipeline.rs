//! Serving a manifest's pipelines: each is an OIP model of its own name. Image inputs are BYTES
//! (one element: the PNG or JPEG file, in Triton's binary tensor extension as a 4-byte
//! little-endian length and the bytes); tensor inputs are FP32 (JSON `data` or binary). Image
//! outputs are returned as binary BYTES (PNG), tensor outputs as FP32 (JSON `data`, or binary when
//! the output asks for `binary_data`).
//!
//! A pipeline request is admitted only while fewer than [`ServedPipeline::capacity`] of its
//! requests are in flight (503 at once otherwise); it is decoded, run and encoded on a blocking
//! thread, and its model steps queue through the same batchers as the models' own requests, so
//! the compute (and the arenas it needs) is bounded by each model's `instances`, never by the
//! number of clients.

use super::batcher::Batcher;
use super::error::ServeError;
use crate::models::MethodSig;
use crate::oip::{self, Encoded, Input, OutputData, OutputTensor};
use crate::pipeline::exec::{self, CallError, Models};
use crate::pipeline::graph::Pipeline;
use crate::pipeline::ops::Data;
use crate::pipeline::spec::PortType;
use axum::body::Bytes;
use plugin_api::{NamedTensor, Tensor};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The served methods a pipeline's model steps call, by `model.method`.
pub struct BatchedModels(pub BTreeMap<String, Batcher>);

impl BatchedModels {
    fn call_one(
        &self,
        name: &str,
        inputs: Vec<NamedTensor>,
    ) -> Result<Vec<NamedTensor>, CallError> {
        let fail = |user: bool, message: String| CallError {
            user,
            unavailable: false,
            message,
        };
        let batcher = self
            .0
            .get(name)
            .ok_or_else(|| fail(false, format!("{name} is not served")))?;
        let sig: &MethodSig = batcher.sig();
        let [input] = <[NamedTensor; 1]>::try_from(inputs).map_err(|inputs| {
            fail(
                false,
                format!("{name} takes one input, the step gives {}", inputs.len()),
            )
        })?;
        let shape = input.tensor.shape();
        if shape.len() != sig.input.1.len() + 1 || shape[1..] != sig.input.1[..] || shape[0] == 0 {
            return Err(fail(
                true,
                format!(
                    "{name}: input `{}` has shape {shape:?}; the model takes [-1, {}]",
                    sig.input.0,
                    sig.input
                        .1
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let items = shape[0];
        let (_, data) = input.tensor.into_parts();
        let outputs = batcher.call_blocking(data, items).map_err(|e| CallError {
            user: matches!(e, ServeError::InvalidInput(_) | ServeError::NotFound(_)),
            unavailable: matches!(
                e,
                ServeError::QueueFull(_) | ServeError::NotReady(_) | ServeError::Timeout(_)
            ),
            message: e.to_string(),
        })?;
        sig.outputs
            .iter()
            .zip(outputs)
            .map(|((out, dims), data)| {
                let mut shape = vec![items];
                shape.extend(dims);
                Tensor::new(shape, data)
                    .map(|t| NamedTensor::new(out.as_str(), t))
                    .map_err(|e| fail(false, format!("{name}: output `{out}`: {e}")))
            })
            .collect()
    }
}

impl Models for BatchedModels {
    fn call(
        &self,
        model: &str,
        method: &str,
        inputs: Vec<NamedTensor>,
    ) -> Result<Vec<NamedTensor>, CallError> {
        self.call_one(&format!("{model}.{method}"), inputs)
    }
}

/// A served pipeline.
pub struct ServedPipeline {
    /// The resolved graph.
    pub pipeline: Arc<Pipeline>,
    /// The served methods its steps call.
    pub models: Arc<BatchedModels>,
    /// Its requests in flight (decoding, running or encoding).
    admitted: Arc<Semaphore>,
    capacity: usize,
    /// Largest request body accepted.
    pub max_request_bytes: u64,
}

fn invalid(msg: String) -> ServeError {
    ServeError::InvalidInput(msg)
}

fn port_meta(name: &str, ty: PortType) -> Value {
    match ty {
        PortType::Image => json!({"name": name, "datatype": "BYTES", "shape": [1]}),
        PortType::Tensor => json!({"name": name, "datatype": "FP32", "shape": [-1, -1, -1, -1]}),
    }
}

impl ServedPipeline {
    /// A served pipeline admitting at most `capacity` requests at a time.
    pub fn new(
        pipeline: Arc<Pipeline>,
        models: BatchedModels,
        capacity: usize,
        max_request_bytes: u64,
    ) -> ServedPipeline {
        let capacity = capacity.max(1);
        ServedPipeline {
            pipeline,
            models: Arc::new(models),
            admitted: Arc::new(Semaphore::new(capacity)),
            capacity,
            max_request_bytes,
        }
    }

    /// How many of its requests may be in flight at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// True while every method it calls can answer.
    pub fn healthy(&self) -> bool {
        self.models.0.values().all(Batcher::healthy)
    }

    /// The OIP model metadata.
    pub fn metadata(&self) -> Value {
        let p = &self.pipeline;
        json!({
            "name": p.name,
            "versions": ["1"],
            "platform": format!("mlhost_pipeline_{}", p.kind.map_or("custom", |k| k.name())),
            "inputs": p.inputs.iter().map(|(n, t)| port_meta(n, *t)).collect::<Vec<_>>(),
            "outputs": p.outputs.iter().map(|(n, t)| port_meta(n, *t)).collect::<Vec<_>>(),
        })
    }

    /// Admits a request (503 when `capacity` are in flight), then decodes it, runs the pipeline
    /// and encodes the reply on a blocking thread.
    pub async fn infer(
        &self,
        body: Bytes,
        header_len: Option<usize>,
    ) -> Result<Encoded, ServeError> {
        let name = self.pipeline.name.clone();
        let permit = self.admitted.clone().try_acquire_owned().map_err(|_| {
            ServeError::QueueFull(format!(
                "pipeline {name} has {} requests in flight; retry later",
                self.capacity
            ))
        })?;
        let (p, models) = (self.pipeline.clone(), self.models.clone());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            run(&p, models.as_ref(), &body, header_len)
        })
        .await
        .map_err(|e| ServeError::Internal(format!("{name}: the pipeline task failed: {e}")))?
    }
}

/// Decodes, runs and encodes one pipeline request (on a blocking thread).
fn run(
    p: &Pipeline,
    models: &BatchedModels,
    body: &[u8],
    header_len: Option<usize>,
) -> Result<Encoded, ServeError> {
    let name = &p.name;
    let req = oip::decode(body, header_len)?;
    let inputs = parse_inputs(p, &req.inputs)?;
    let wanted: Vec<(String, bool)> = match &req.outputs {
        None => p.outputs.keys().map(|n| (n.clone(), false)).collect(),
        Some(outs) => outs
            .iter()
            .map(|o| {
                if !p.outputs.contains_key(&o.name) {
                    return Err(invalid(format!("{name} has no output `{}`", o.name)));
                }
                Ok((o.name.clone(), o.binary == Some(true)))
            })
            .collect::<Result<_, _>>()?,
    };
    let results = exec::run(p, inputs, models).map_err(|e| {
        let message = e.to_string();
        if e.is_unavailable() {
            ServeError::QueueFull(message)
        } else if e.is_user_error() {
            ServeError::InvalidInput(message)
        } else {
            ServeError::Internal(message)
        }
    })?;
    let mut outputs = Vec::new();
    for (out, binary) in &wanted {
        let Some(data) = results.get(out) else {
            return Err(ServeError::Internal(format!(
                "{name}: output {out} missing"
            )));
        };
        outputs.push(match data {
            Data::Bytes(b) => OutputTensor {
                name: out,
                shape: vec![1],
                data: OutputData::Bytes(b),
                binary: true,
            },
            Data::Tensor(t) => OutputTensor {
                name: out,
                shape: t.shape(),
                data: OutputData::Fp32(t.data()),
                binary: *binary,
            },
        });
    }
    Ok(oip::encode(name, req.id.as_deref(), &outputs))
}

fn parse_inputs(p: &Pipeline, raw: &[Input]) -> Result<BTreeMap<String, Data>, ServeError> {
    let mut inputs = BTreeMap::new();
    for input in raw {
        let name = &input.name;
        let ty = *p.inputs.get(name).ok_or_else(|| {
            let known: Vec<&str> = p.inputs.keys().map(String::as_str).collect();
            invalid(format!(
                "{} has no input `{name}` (inputs: {})",
                p.name,
                known.join(", ")
            ))
        })?;
        let data = match (ty, input.datatype.as_str()) {
            (PortType::Image, "BYTES") => Data::Bytes(Arc::new(input.single_bytes()?.to_vec())),
            (PortType::Tensor, "FP32") => {
                let dims = input.dims()?;
                let values = input.fp32(&dims)?;
                Data::Tensor(
                    Tensor::new(dims, values).map_err(|e| invalid(e.message().to_string()))?,
                )
            }
            (ty, other) => {
                let want = match ty {
                    PortType::Image => "BYTES",
                    PortType::Tensor => "FP32",
                };
                return Err(invalid(format!(
                    "input `{name}`: datatype {other}; expected {want}"
                )));
            }
        };
        if inputs.insert(name.clone(), data).is_some() {
            return Err(invalid(format!("input `{name}` is given twice")));
        }
    }
    exec::check_inputs(p, &inputs).map_err(|e| invalid(e.to_string()))?;
    Ok(inputs)
}
