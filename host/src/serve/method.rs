//! A served method's requests and replies: the OIP request checked against the method's
//! signature (one FP32 input `[-1, dims...]`), and the reply built from its outputs' rows.

use super::error::ServeError;
use crate::models::MethodSig;
use crate::oip::{self, Encoded, Limits, OutputData, OutputTensor};

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
    limits: &Limits,
) -> Result<InferRequest, ServeError> {
    let req = oip::decode(body, header_len)?;
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
    let expected: Vec<String> = std::iter::once("-1".to_string())
        .chain(dims.iter().map(|d| d.to_string()))
        .collect();
    let shape_ok = input.shape.len() == dims.len() + 1
        && input.shape[0] >= 1
        && input.shape[1..]
            .iter()
            .zip(dims)
            .all(|(&a, &b)| u64::try_from(a).ok() == Some(b as u64));
    if !shape_ok {
        return Err(invalid(format!(
            "input `{want_name}`: shape {:?} does not match [{}] (a batch of at least 1, then \
             the compiled dimensions)",
            input.shape,
            expected.join(", ")
        )));
    }
    let items = input.dims()?[0];
    input.check_rows(items, limits)?;
    let mut full = vec![items];
    full.extend(dims);
    let data = input.fp32(&full)?;
    let binary_default = req.flag("binary_data_output");
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
                Ok((i, o.binary.unwrap_or(binary_default)))
            })
            .collect::<Result<_, ServeError>>()?,
    };
    Ok(InferRequest {
        id: req.id.clone(),
        data,
        items,
        outputs,
        timeout_us: req.timeout_us()?,
    })
}

/// Encodes the response for `req` from the outputs of its items.
pub fn encode(model: &str, sig: &MethodSig, req: &InferRequest, outputs: &[Vec<f32>]) -> Encoded {
    let tensors: Vec<OutputTensor> = req
        .outputs
        .iter()
        .map(|&(i, binary)| {
            let (name, dims) = &sig.outputs[i];
            let mut shape = vec![req.items];
            shape.extend(dims);
            OutputTensor {
                name,
                shape,
                data: OutputData::Fp32(&outputs[i]),
                binary,
            }
        })
        .collect();
    oip::encode(model, req.id.as_deref(), &tensors)
}
