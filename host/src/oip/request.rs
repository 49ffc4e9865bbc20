//! Decoding an inference request.

use super::error::CodecError;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Limits a request is checked against while it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most rows (items of the batch dimension) one request may carry.
    pub max_rows: usize,
    /// What sets `max_rows`, for the error message (e.g. `max_queue_size 64 x batch 4`).
    pub rows_reason: &'static str,
}

/// A decoded request: its JSON fields and each input's payload.
#[derive(Debug)]
pub struct Request<'a> {
    /// The request id, echoed back.
    pub id: Option<String>,
    /// Request parameters.
    pub parameters: Map<String, Value>,
    /// The inputs in request order.
    pub inputs: Vec<Input<'a>>,
    /// The outputs asked for; `None` means all.
    pub outputs: Option<Vec<OutputRequest>>,
}

/// One input tensor of a request.
#[derive(Debug)]
pub struct Input<'a> {
    /// Its name.
    pub name: String,
    /// Its datatype as sent (`FP32`, `BYTES`, ...).
    pub datatype: String,
    /// Its shape as sent (may hold negative or huge numbers).
    pub shape: Vec<i64>,
    /// Where its data is.
    pub payload: Payload<'a>,
}

/// An input's data.
#[derive(Debug)]
pub enum Payload<'a> {
    /// JSON `data`.
    Json(Value),
    /// Bytes of the binary part (`parameters.binary_data_size`).
    Binary(&'a [u8]),
    /// Neither.
    Missing,
}

/// One requested output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRequest {
    /// Its name.
    pub name: String,
    /// `parameters.binary_data`, when given as a boolean.
    pub binary: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RawRequest {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
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

fn invalid(msg: String) -> CodecError {
    CodecError(msg)
}

/// The value of the `Inference-Header-Content-Length` header, if sent.
pub fn header_length(value: Option<&[u8]>) -> Result<Option<usize>, CodecError> {
    let Some(v) = value else { return Ok(None) };
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| invalid("Inference-Header-Content-Length must be a byte count".into()))
}

/// Splits `body` into its JSON header and binary part, parses the JSON and hands each input
/// with `binary_data_size` its bytes, in order. Bytes that no input claims are an error.
pub fn decode(body: &[u8], header_len: Option<usize>) -> Result<Request<'_>, CodecError> {
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
    let raw: RawRequest = serde_json::from_slice(json_part)
        .map_err(|e| invalid(format!("invalid inference request JSON: {e}")))?;
    let mut inputs = Vec::with_capacity(raw.inputs.len());
    for input in raw.inputs {
        let name = input.name;
        let payload = match (input.data, input.parameters.get("binary_data_size")) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "input `{name}` has both `data` and `binary_data_size`"
                )))
            }
            (None, Some(size)) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| {
                        invalid(format!(
                            "input `{name}`: binary_data_size must be a byte count, got {size}"
                        ))
                    })?;
                if binary.len() < size {
                    return Err(invalid(format!(
                        "input `{name}`: {size} bytes of binary data announced, {} present",
                        binary.len()
                    )));
                }
                let (bytes, rest) = binary.split_at(size);
                binary = rest;
                Payload::Binary(bytes)
            }
            (Some(v), None) => Payload::Json(v),
            (None, None) => Payload::Missing,
        };
        inputs.push(Input {
            name,
            datatype: input.datatype,
            shape: input.shape,
            payload,
        });
    }
    if !binary.is_empty() {
        return Err(invalid(format!(
            "{} bytes of binary data follow the inputs unclaimed",
            binary.len()
        )));
    }
    let outputs = raw.outputs.map(|list| {
        list.into_iter()
            .map(|o| OutputRequest {
                binary: o.parameters.get("binary_data").and_then(Value::as_bool),
                name: o.name,
            })
            .collect()
    });
    Ok(Request {
        id: raw.id,
        parameters: raw.parameters,
        inputs,
        outputs,
    })
}

impl Request<'_> {
    /// A boolean request parameter (false when absent or not a boolean).
    pub fn flag(&self, key: &str) -> bool {
        self.parameters
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// `parameters.timeout` in microseconds.
    pub fn timeout_us(&self) -> Result<Option<u64>, CodecError> {
        match self.parameters.get("timeout") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                invalid(format!(
                    "parameters.timeout must be microseconds (an integer >= 0), got {v}"
                ))
            }),
        }
    }
}

impl Input<'_> {
    /// The shape as sizes; a negative dimension is an error.
    pub fn dims(&self) -> Result<Vec<usize>, CodecError> {
        self.shape
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                invalid(format!(
                    "input `{}`: shape {:?} has a negative dimension",
                    self.name, self.shape
                ))
            })
    }

    /// The element count of `dims`, checked: a product that does not fit is an error naming
    /// the shape.
    pub fn element_count(&self, dims: &[usize]) -> Result<usize, CodecError> {
        dims.iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|n| n.checked_mul(4).is_some())
            .ok_or_else(|| {
                invalid(format!(
                    "input `{}`: shape {:?} has more elements than can be addressed",
                    self.name, self.shape
                ))
            })
    }

    /// Checks the batch dimension `rows` against `limits`.
    pub fn check_rows(&self, rows: usize, limits: &Limits) -> Result<(), CodecError> {
        if rows > limits.max_rows {
            return Err(invalid(format!(
                "input `{}`: {rows} rows exceed the limit of {} rows per request ({})",
                self.name, limits.max_rows, limits.rows_reason
            )));
        }
        Ok(())
    }

    /// The FP32 values of a tensor of shape `dims`, from binary or JSON data.
    pub fn fp32(&self, dims: &[usize]) -> Result<Vec<f32>, CodecError> {
        let name = &self.name;
        let count = self.element_count(dims)?;
        match &self.payload {
            Payload::Binary(bytes) => {
                if bytes.len() / 4 != count || bytes.len() % 4 != 0 {
                    return Err(invalid(format!(
                        "input `{name}`: binary_data_size is {} bytes; shape {:?} of FP32 needs {}",
                        bytes.len(),
                        self.shape,
                        count * 4
                    )));
                }
                Ok(bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect())
            }
            Payload::Json(value) => json_fp32(name, &self.shape, value, count),
            Payload::Missing => Err(invalid(format!("input `{name}` has no data"))),
        }
    }

    /// The one element of a BYTES tensor of shape `[1]`, sent as binary data (a 4-byte
    /// little-endian length and that many bytes).
    pub fn single_bytes(&self) -> Result<&[u8], CodecError> {
        let name = &self.name;
        if self.shape != [1] {
            return Err(invalid(format!(
                "input `{name}`: shape {:?}; an image input holds one element, shape [1]",
                self.shape
            )));
        }
        let Payload::Binary(bytes) = self.payload else {
            return Err(invalid(format!(
                "input `{name}`: send the image file as binary data (binary_data_size)"
            )));
        };
        let len = bytes
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        if len != Some(bytes.len().saturating_sub(4)) {
            return Err(invalid(format!(
                "input `{name}`: BYTES data must be a 4-byte little-endian length and that many \
                 bytes ({} bytes given)",
                bytes.len()
            )));
        }
        Ok(&bytes[4..])
    }
}

/// JSON `data`: lists nested regularly (every list at one depth the same length, numbers only
/// at the deepest level) holding exactly the shape's element count in row-major order: flat,
/// nested as the shape, or any regular regrouping of it (`[32, 8]` for `[1, 4, 8, 8]`).
fn json_fp32(
    name: &str,
    shape: &[i64],
    value: &Value,
    count: usize,
) -> Result<Vec<f32>, CodecError> {
    if !value.is_array() {
        return Err(invalid(format!(
            "input `{name}`: data must be a list of numbers, found {}",
            snippet(value)
        )));
    }
    // The nesting as the first elements show it, then every list checked against it.
    let mut nesting = Vec::new();
    let mut v = value;
    while let Value::Array(items) = v {
        nesting.push(items.len());
        match items.first() {
            Some(first) => v = first,
            None => break,
        }
    }
    check_regular(name, value, &nesting, &mut String::from("data"))?;
    let held = nesting.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if held != Some(count) {
        let held = if nesting.len() == 1 {
            nesting[0].to_string()
        } else {
            format!("{nesting:?}")
        };
        return Err(invalid(format!(
            "input `{name}`: shape {shape:?} needs {count} elements, data has {held}"
        )));
    }
    // The data holds exactly `count` numbers: allocating for them is bounded by the body.
    let mut out = Vec::with_capacity(count);
    push_numbers(name, value, &mut out)?;
    Ok(out)
}

fn check_regular(
    name: &str,
    value: &Value,
    nesting: &[usize],
    path: &mut String,
) -> Result<(), CodecError> {
    let Some((&want, rest)) = nesting.split_first() else {
        return match value {
            Value::Number(_) => Ok(()),
            Value::Array(_) => Err(invalid(format!(
                "input `{name}`: {path} is a list where its siblings hold numbers (ragged data)"
            ))),
            other => Err(invalid(format!(
                "input `{name}`: data must hold numbers, found {}",
                snippet(other)
            ))),
        };
    };
    let Value::Array(items) = value else {
        return Err(invalid(format!(
            "input `{name}`: {path} is {} where its siblings are lists (ragged data)",
            snippet(value)
        )));
    };
    if items.len() != want {
        return Err(invalid(format!(
            "input `{name}`: {path} has {} elements where its siblings have {want} (ragged data)",
            items.len()
        )));
    }
    for (i, item) in items.iter().enumerate() {
        let len = path.len();
        path.push_str(&format!("[{i}]"));
        check_regular(name, item, rest, path)?;
        path.truncate(len);
    }
    Ok(())
}

fn push_numbers(name: &str, value: &Value, out: &mut Vec<f32>) -> Result<(), CodecError> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| push_numbers(name, v, out)),
        Value::Number(n) => {
            let index = out.len();
            let wide = n.as_f64().filter(|v| v.is_finite());
            let v = wide.map(|v| v as f32).filter(|v| v.is_finite());
            match v {
                Some(v) => {
                    out.push(v);
                    Ok(())
                }
                None => Err(invalid(format!(
                    "input `{name}`: data[{index}] = {n} is not a finite FP32 value (FP32 holds \
                     magnitudes up to {:e})",
                    f32::MAX
                ))),
            }
        }
        other => Err(invalid(format!(
            "input `{name}`: data must hold numbers, found {}",
            snippet(other)
        ))),
    }
}

fn snippet(v: &Value) -> String {
    v.to_string().chars().take(40).collect()
}
