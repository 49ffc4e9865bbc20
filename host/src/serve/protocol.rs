//! Open Inference Protocol v2 inference requests and responses, with Triton's binary tensor
//! extension: a JSON header (its length in `Inference-Header-Content-Length`) followed by raw
//! little-endian tensors in the order of the JSON's tensors.

use super::batcher::MethodSig;
use super::error::ServeError;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The header that gives the JSON part's length when binary tensor data follows.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Debug, Deserialize)]
struct RawRequest {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
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

/// A validated inference request.
#[derive(Debug)]
pub struct InferRequest {
    /// The request id, echoed back.
    pub id: Option<String>,
    /// The input rows, row-major.
    pub data: Vec<f32>,
    /// Batch items.
    pub items: usize,
    /// Outputs to return (index into the signature's outputs, binary?).
    pub outputs: Vec<(usize, bool)>,
    /// `parameters.timeout` in microseconds.
    pub timeout_us: Option<u64>,
}

fn invalid(msg: String) -> ServeError {
    ServeError::InvalidInput(msg)
}

/// Parses and validates a request body against `sig` (`model` names it in errors).
pub fn parse(
    model: &str,
    sig: &MethodSig,
    body: &[u8],
    header_len: Option<usize>,
) -> Result<InferRequest, ServeError> {
    let (json_part, mut binary) = match header_len {
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
    let (want_name, dims) = &sig.input;
    let [input] = &req.inputs[..] else {
        let names: Vec<&str> = req.inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(invalid(format!(
            "{model} takes exactly one input `{want_name}`, got [{}]",
            names.join(", ")
        )));
    };
    if &input.name != want_name {
        return Err(invalid(format!(
            "{model} has no input `{}`; its input is `{want_name}`",
            input.name
        )));
    }
    if input.datatype != "FP32" {
        return Err(invalid(format!(
            "input `{want_name}`: datatype {} is not supported; expected FP32",
            input.datatype
        )));
    }
    let mut expected = vec![-1i64];
    expected.extend(dims.iter().map(|&d| d as i64));
    let shape_ok = input.shape.len() == expected.len()
        && input.shape[0] >= 1
        && input.shape[1..] == expected[1..];
    if !shape_ok {
        return Err(invalid(format!(
            "input `{want_name}`: shape {:?} does not match {expected:?}",
            input.shape
        )));
    }
    let items = input.shape[0] as usize;
    let count = items * dims.iter().product::<usize>();
    let data = match (&input.data, input.parameters.get("binary_data_size")) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "input `{want_name}` has both `data` and `binary_data_size`"
            )))
        }
        (None, Some(size)) => {
            let size = size.as_u64().ok_or_else(|| {
                invalid(format!(
                    "input `{want_name}`: binary_data_size must be an integer"
                ))
            })? as usize;
            if size != count * 4 {
                return Err(invalid(format!(
                    "input `{want_name}`: binary_data_size is {size} bytes; shape {:?} of FP32 \
                     needs {}",
                    input.shape,
                    count * 4
                )));
            }
            if binary.len() < size {
                return Err(invalid(format!(
                    "input `{want_name}`: {size} bytes of binary data announced, {} present",
                    binary.len()
                )));
            }
            let (bytes, rest) = binary.split_at(size);
            binary = rest;
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        (Some(value), None) => {
            let mut out = Vec::with_capacity(count);
            flatten(value, &mut out).map_err(|what| {
                invalid(format!(
                    "input `{want_name}`: data must hold numbers, found {what}"
                ))
            })?;
            if out.len() != count {
                return Err(invalid(format!(
                    "input `{want_name}`: shape {:?} needs {count} elements, data has {}",
                    input.shape,
                    out.len()
                )));
            }
            out
        }
        (None, None) => return Err(invalid(format!("input `{want_name}` has no data"))),
    };
    if !binary.is_empty() {
        return Err(invalid(format!(
            "{} bytes of binary data follow the inputs unclaimed",
            binary.len()
        )));
    }
    let binary_default = flag(&req.parameters, "binary_data_output");
    let outputs = match &req.outputs {
        None => (0..sig.outputs.len())
            .map(|i| (i, binary_default))
            .collect(),
        Some(list) => list
            .iter()
            .map(|o| {
                let i = sig
                    .outputs
                    .iter()
                    .position(|(n, _)| *n == o.name)
                    .ok_or_else(|| {
                        let names: Vec<&str> =
                            sig.outputs.iter().map(|(n, _)| n.as_str()).collect();
                        invalid(format!(
                            "{model} has no output `{}`; its outputs are {}",
                            o.name,
                            names.join(", ")
                        ))
                    })?;
                let binary = match o.parameters.get("binary_data") {
                    Some(v) => v.as_bool().unwrap_or(false),
                    None => binary_default,
                };
                Ok((i, binary))
            })
            .collect::<Result<_, ServeError>>()?,
    };
    let timeout_us = match req.parameters.get("timeout") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            invalid(format!(
                "parameters.timeout must be microseconds (an integer >= 0), got {v}"
            ))
        })?),
    };
    Ok(InferRequest {
        id: req.id,
        data,
        items,
        outputs,
        timeout_us,
    })
}

fn flag(params: &Map<String, Value>, key: &str) -> bool {
    params.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn flatten(v: &Value, out: &mut Vec<f32>) -> Result<(), String> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        Value::Number(n) => {
            out.push(n.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        other => Err(other.to_string().chars().take(40).collect()),
    }
}

/// A response: the JSON header and, when some output is binary, the bytes that follow it.
pub struct Encoded {
    /// The JSON part.
    pub json: Vec<u8>,
    /// Raw tensors following the JSON (empty when all outputs are JSON).
    pub binary: Vec<u8>,
}

/// Encodes the response for `req` from the outputs of its items.
pub fn encode(model: &str, sig: &MethodSig, req: &InferRequest, outputs: &[Vec<f32>]) -> Encoded {
    let mut binary = Vec::new();
    let list: Vec<Value> = req
        .outputs
        .iter()
        .map(|&(i, as_binary)| {
            let (name, dims) = &sig.outputs[i];
            let mut shape = vec![req.items];
            shape.extend(dims);
            let data = &outputs[i];
            if as_binary {
                let start = binary.len();
                binary.reserve(data.len() * 4);
                for v in data {
                    binary.extend_from_slice(&v.to_le_bytes());
                }
                json!({"name": name, "datatype": "FP32", "shape": shape,
                       "parameters": {"binary_data_size": binary.len() - start}})
            } else {
                json!({"name": name, "datatype": "FP32", "shape": shape, "data": data})
            }
        })
        .collect();
    let mut body = json!({"model_name": model, "model_version": "1", "outputs": list});
    if let Some(id) = &req.id {
        body["id"] = json!(id);
    }
    Encoded {
        json: serde_json::to_vec(&body).unwrap_or_default(),
        binary,
    }
}
