//! Serving a manifest's pipelines: each is an OIP model of its own name. Image inputs are BYTES
//! (one element: the PNG or JPEG file, in Triton's binary tensor extension as a 4-byte
//! little-endian length and the bytes); tensor inputs are FP32 (JSON `data` or binary). Image
//! outputs are returned as binary BYTES (PNG), tensor outputs as FP32 (JSON `data`, or binary when
//! the output asks for `binary_data`). Runs on a blocking thread; model methods are called
//! directly, beside the models' own batchers.

use super::error::ServeError;
use crate::cli::pipeline::ManifestModels;
use crate::pipeline::exec;
use crate::pipeline::graph::Pipeline;
use crate::pipeline::ops::Data;
use crate::pipeline::spec::PortType;
use plugin_api::Tensor;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A served pipeline.
pub struct ServedPipeline {
    /// The resolved graph.
    pub pipeline: Arc<Pipeline>,
    /// The models its steps call.
    pub models: Arc<ManifestModels>,
}

#[derive(Debug, Deserialize)]
struct RawRequest {
    id: Option<String>,
    #[serde(default)]
    inputs: Vec<RawInput>,
    outputs: Option<Vec<RawOutput>>,
}

#[derive(Debug, Deserialize)]
struct RawInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct RawOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
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

    /// Parses a request, runs the pipeline on a blocking thread and encodes the reply as
    /// `(json, binary)`.
    pub async fn infer(
        &self,
        body: &[u8],
        header_len: Option<usize>,
    ) -> Result<(Vec<u8>, Vec<u8>), ServeError> {
        let name = &self.pipeline.name;
        let (json_part, binary) = match header_len {
            Some(n) if n > body.len() => {
                return Err(invalid(format!(
                    "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                    body.len()
                )))
            }
            Some(n) => body.split_at(n),
            None => (body, &[][..]),
        };
        let req: RawRequest = serde_json::from_slice(json_part)
            .map_err(|e| invalid(format!("invalid inference request JSON: {e}")))?;
        let inputs = parse_inputs(&self.pipeline, &req.inputs, binary)?;
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
                    let binary = o.parameters.get("binary_data") == Some(&Value::Bool(true));
                    Ok((o.name.clone(), binary))
                })
                .collect::<Result<_, _>>()?,
        };
        let (p, models) = (self.pipeline.clone(), self.models.clone());
        let results = tokio::task::spawn_blocking(move || exec::run(&p, inputs, models.as_ref()))
            .await
            .map_err(|e| ServeError::Internal(format!("{name}: the pipeline task failed: {e}")))?
            .map_err(|e| {
                if e.is_user_error() {
                    invalid(e.to_string())
                } else {
                    ServeError::Internal(e.to_string())
                }
            })?;
        let mut outputs = Vec::new();
        let mut bin = Vec::new();
        for (out, want_binary) in wanted {
            let Some(data) = results.get(&out) else {
                return Err(ServeError::Internal(format!(
                    "{name}: output {out} missing"
                )));
            };
            outputs.push(match data {
                Data::Bytes(b) => {
                    let start = bin.len();
                    bin.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    bin.extend_from_slice(b);
                    json!({"name": out, "datatype": "BYTES", "shape": [1],
                           "parameters": {"binary_data_size": bin.len() - start}})
                }
                Data::Tensor(t) if want_binary => {
                    let start = bin.len();
                    bin.extend(t.data().iter().flat_map(|v| v.to_le_bytes()));
                    json!({"name": out, "datatype": "FP32", "shape": t.shape(),
                           "parameters": {"binary_data_size": bin.len() - start}})
                }
                Data::Tensor(t) => {
                    json!({"name": out, "datatype": "FP32", "shape": t.shape(), "data": t.data()})
                }
            });
        }
        let mut reply = json!({"model_name": name, "model_version": "1", "outputs": outputs});
        if let Some(id) = req.id {
            reply["id"] = json!(id);
        }
        Ok((reply.to_string().into_bytes(), bin))
    }
}

fn parse_inputs(
    p: &Pipeline,
    raw: &[RawInput],
    mut binary: &[u8],
) -> Result<BTreeMap<String, Data>, ServeError> {
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
        let mut take = |what: &str| -> Result<Option<&[u8]>, ServeError> {
            let Some(size) = input.parameters.get("binary_data_size") else {
                return Ok(None);
            };
            if input.data.is_some() {
                return Err(invalid(format!(
                    "input `{name}` has both `data` and `binary_data_size`"
                )));
            }
            let size = size.as_u64().ok_or_else(|| {
                invalid(format!(
                    "input `{name}`: binary_data_size must be an integer"
                ))
            })? as usize;
            if binary.len() < size {
                return Err(invalid(format!(
                    "input `{name}`: {size} bytes of {what} announced, {} present",
                    binary.len()
                )));
            }
            let (bytes, rest) = binary.split_at(size);
            binary = rest;
            Ok(Some(bytes))
        };
        let data = match (ty, input.datatype.as_str()) {
            (PortType::Image, "BYTES") => {
                if input.shape != [1] {
                    return Err(invalid(format!(
                        "input `{name}`: shape {:?}; an image input holds one element, shape [1]",
                        input.shape
                    )));
                }
                let bytes = take("BYTES")?.ok_or_else(|| {
                    invalid(format!(
                        "input `{name}`: send the image file as binary data (binary_data_size)"
                    ))
                })?;
                let len = bytes
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
                if len != Some(bytes.len().saturating_sub(4)) {
                    return Err(invalid(format!(
                        "input `{name}`: BYTES data must be a 4-byte little-endian length and \
                         that many bytes ({} bytes given)",
                        bytes.len()
                    )));
                }
                Data::Bytes(Arc::new(bytes[4..].to_vec()))
            }
            (PortType::Tensor, "FP32") => {
                if input.shape.iter().any(|&d| d < 0) {
                    return Err(invalid(format!(
                        "input `{name}`: shape {:?} has a negative dimension",
                        input.shape
                    )));
                }
                let shape: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
                let count: usize = shape.iter().product();
                let values: Vec<f32> = match take("FP32")? {
                    Some(bytes) => bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                    None => {
                        let mut v = Vec::with_capacity(count);
                        flatten(input.data.as_ref().unwrap_or(&Value::Null), &mut v)
                            .map_err(|e| invalid(format!("input `{name}`: {e}")))?;
                        v
                    }
                };
                if values.len() != count {
                    return Err(invalid(format!(
                        "input `{name}`: shape {:?} needs {count} FP32 values, got {}",
                        input.shape,
                        values.len()
                    )));
                }
                Data::Tensor(
                    Tensor::new(shape, values).map_err(|e| invalid(e.message().to_string()))?,
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

fn flatten(v: &Value, out: &mut Vec<f32>) -> Result<(), String> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        Value::Number(n) => {
            out.push(n.as_f64().ok_or("not a number")? as f32);
            Ok(())
        }
        Value::Null => Err("`data` is missing".into()),
        other => Err(format!("FP32 data must be numbers, got {other}")),
    }
}
