//! Encoding an inference response.

use serde_json::{json, Value};

/// One output tensor of a response.
#[derive(Debug)]
pub struct OutputTensor<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its data.
    pub data: OutputData<'a>,
    /// Send it in the binary part (FP32); BYTES outputs are always binary.
    pub binary: bool,
}

/// An output's data.
#[derive(Debug)]
pub enum OutputData<'a> {
    /// FP32 values, row-major.
    Fp32(&'a [f32]),
    /// One BYTES element (e.g. a PNG file).
    Bytes(&'a [u8]),
}

/// A response: the JSON header and, when some output is binary, the bytes that follow it.
#[derive(Debug, Default)]
pub struct Encoded {
    /// The JSON part.
    pub json: Vec<u8>,
    /// Raw tensors following the JSON (empty when all outputs are JSON).
    pub binary: Vec<u8>,
}

/// Encodes the response of `model` (version 1) to request `id`.
pub fn encode(model: &str, id: Option<&str>, outputs: &[OutputTensor]) -> Encoded {
    let mut binary = Vec::new();
    let list: Vec<Value> = outputs
        .iter()
        .map(|o| {
            let start = binary.len();
            match o.data {
                OutputData::Bytes(b) => {
                    binary.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    binary.extend_from_slice(b);
                    json!({"name": o.name, "datatype": "BYTES", "shape": o.shape,
                           "parameters": {"binary_data_size": binary.len() - start}})
                }
                OutputData::Fp32(data) if o.binary => {
                    binary.reserve(data.len() * 4);
                    for v in data {
                        binary.extend_from_slice(&v.to_le_bytes());
                    }
                    json!({"name": o.name, "datatype": "FP32", "shape": o.shape,
                           "parameters": {"binary_data_size": binary.len() - start}})
                }
                OutputData::Fp32(data) => {
                    json!({"name": o.name, "datatype": "FP32", "shape": o.shape, "data": data})
                }
            }
        })
        .collect();
    let mut body = json!({"model_name": model, "model_version": "1", "outputs": list});
    if let Some(id) = id {
        body["id"] = json!(id);
    }
    Encoded {
        json: serde_json::to_vec(&body).unwrap_or_default(),
        binary,
    }
}
