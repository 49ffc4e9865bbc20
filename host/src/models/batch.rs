//! Running a served method: one call of the plugin on a full batch, with the outputs checked
//! against the signature. The server's batcher and the Triton backend both execute through
//! [`run_batch`].

use super::signature::MethodSig;
use crate::error::{plugin_kind, ErrorKind, KindError};
use plugin_api::{ModelBox, NamedTensor, Tensor};

/// Runs `sig.method` of `model` on one full batch (`sig.batch * sig.input_row()` values,
/// row-major); returns the outputs in signature order, each `sig.batch` rows.
pub fn run_batch(
    model: &ModelBox,
    sig: &MethodSig,
    input: Vec<f32>,
) -> Result<Vec<Vec<f32>>, KindError> {
    let tensor = Tensor::new(sig.input_shape(), input)
        .map_err(|e| KindError::new(ErrorKind::Internal, e.to_string()))?;
    let inputs = vec![NamedTensor::new(sig.input.0.clone(), tensor)];
    let outs = model
        .call(sig.method.as_str().into(), inputs.into(), "{}".into())
        .into_result()
        .map_err(|e| KindError::new(plugin_kind(&e), format!("{}: {e}", sig.method)))?
        .into_vec();
    sig.outputs
        .iter()
        .map(|(name, dims)| {
            let t = outs
                .iter()
                .find(|t| t.name.as_str() == name)
                .ok_or_else(|| internal(format!("{} returned no `{name}`", sig.method)))?;
            let want = dims.iter().product::<usize>().checked_mul(sig.batch);
            if Some(t.tensor.data().len()) != want {
                return Err(internal(format!(
                    "{} returned `{name}` of shape {:?}, expected {:?} per item",
                    sig.method,
                    t.tensor.shape(),
                    dims
                )));
            }
            Ok(t.tensor.data().to_vec())
        })
        .collect()
}

fn internal(message: String) -> KindError {
    KindError::new(ErrorKind::Internal, message)
}

/// Runs the method once on a batch of zeros and checks its outputs (what a server does before
/// it reports ready).
pub fn warm_up(model: &ModelBox, sig: &MethodSig) -> Result<(), KindError> {
    let len = sig.input_row().checked_mul(sig.batch).ok_or_else(|| {
        KindError::new(
            ErrorKind::Invalid,
            format!(
                "{}: the input shape {:?} is too large",
                sig.method,
                sig.input_shape()
            ),
        )
    })?;
    run_batch(model, sig, vec![0.0; len]).map(|_| ())
}
