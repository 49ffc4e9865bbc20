//! Serving a manifest's pipelines: each is an OIP model of its own name. Image inputs are BYTES
//! (one element: the PNG or JPEG file, in Triton's binary tensor extension as a 4-byte
//! little-endian length and the bytes); tensor inputs are FP32 (JSON `data` or binary). Image
//! outputs are returned as binary BYTES (PNG), tensor outputs as FP32 (JSON `data`, or binary when
//! the output asks for `binary_data`). Runs on a blocking thread; model methods are called
//! directly, beside the models' own batchers.

use super::error::ServeError;
use crate::error::ErrorKind;
use crate::models::pipeline::ManifestModels;
use crate::oip::{self, Encoded, Input, OutputData, OutputTensor};
use crate::pipeline::exec;
use crate::pipeline::graph::Pipeline;
use crate::pipeline::ops::Data;
use crate::pipeline::spec::PortType;
use plugin_api::Tensor;
use serde_json::{json, Value};
use std::sync::Arc;

/// A served pipeline.
pub struct ServedPipeline {
    /// The resolved graph.
    pub pipeline: Arc<Pipeline>,
    /// The models its steps call.
    pub models: Arc<ManifestModels>,
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

    /// Parses a request, runs the pipeline on a blocking thread and encodes the reply.
    pub async fn infer(
        &self,
        body: &[u8],
        header_len: Option<usize>,
    ) -> Result<Encoded, ServeError> {
        let name = &self.pipeline.name;
        let req = oip::decode(body, header_len)?;
        let inputs = parse_inputs(&self.pipeline, &req.inputs)?;
        let wanted: Vec<(String, bool)> = match &req.outputs {
            None => self
                .pipeline
                .outputs
                .keys()
                .map(|n| (n.clone(), false))
                .collect(),
            Some(outs) => outs
                .iter()
                .map(|o| {
                    if !self.pipeline.outputs.contains_key(&o.name) {
                        return Err(invalid(format!("{name} has no output `{}`", o.name)));
                    }
                    Ok((o.name.clone(), o.binary == Some(true)))
                })
                .collect::<Result<_, _>>()?,
        };
        let (p, models) = (self.pipeline.clone(), self.models.clone());
        let results = tokio::task::spawn_blocking(move || exec::run(&p, inputs, models.as_ref()))
            .await
            .map_err(|e| ServeError::Internal(format!("{name}: the pipeline task failed: {e}")))?
            .map_err(|e| {
                let kind = if e.is_user_error() {
                    ErrorKind::Invalid
                } else {
                    ErrorKind::Internal
                };
                ServeError::from_kind(kind, e.to_string())
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
}

fn parse_inputs(
    p: &Pipeline,
    raw: &[Input],
) -> Result<std::collections::BTreeMap<String, Data>, ServeError> {
    let mut inputs = std::collections::BTreeMap::new();
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
