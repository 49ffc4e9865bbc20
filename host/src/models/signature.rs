//! What a served method computes: one input with a batch dimension, fixed outputs.

use plugin_api::{MethodSpec, ModelBox};

/// A served method's signature: one input, fixed outputs, a compiled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodSig {
    /// The plugin method, e.g. `decode`.
    pub method: String,
    /// The input name and its shape without the batch dimension.
    pub input: (String, Vec<usize>),
    /// Output names and shapes without the batch dimension.
    pub outputs: Vec<(String, Vec<usize>)>,
    /// The compiled batch size.
    pub batch: usize,
}

impl MethodSig {
    /// Values per item of the input (the product of its dimensions without the batch).
    pub fn input_row(&self) -> usize {
        self.input.1.iter().product()
    }

    /// The input's full shape, batch first.
    pub fn input_shape(&self) -> Vec<usize> {
        let mut shape = vec![self.batch];
        shape.extend(&self.input.1);
        shape
    }
}

/// The signature of one method spec; an error says why it cannot be served.
pub fn of_spec(spec: &MethodSpec) -> Result<MethodSig, String> {
    let method = spec.name.as_str();
    let [input] = spec.inputs.as_slice() else {
        return Err(format!(
            "{method} takes {} inputs; only single-input methods can be served",
            spec.inputs.len()
        ));
    };
    let shape = input.shape();
    let Some((&batch, dims)) = shape.split_first() else {
        return Err(format!("{method}: the input has no batch dimension"));
    };
    Ok(MethodSig {
        method: method.to_string(),
        input: (input.name.to_string(), dims.to_vec()),
        outputs: spec
            .outputs
            .iter()
            .map(|o| {
                (
                    o.name.to_string(),
                    o.shape().get(1..).unwrap_or(&[]).to_vec(),
                )
            })
            .collect(),
        batch,
    })
}

/// The signature of `method` among the model's methods.
pub fn of_method(model: &ModelBox, method: &str) -> Result<MethodSig, String> {
    let methods = model.methods().into_vec();
    let Some(spec) = methods.iter().find(|m| m.name.as_str() == method) else {
        let names: Vec<&str> = methods.iter().map(|m| m.name.as_str()).collect();
        return Err(format!(
            "the model has no method \"{method}\" (it has: {}){}",
            names.join(", "),
            if method == "encode" {
                "; compile it with uses_encoder=true"
            } else {
                ""
            }
        ));
    };
    of_spec(spec)
}

/// The signatures of every method of the model, in the model's order.
pub fn of_model(model: &ModelBox) -> Result<Vec<MethodSig>, String> {
    model.methods().iter().map(of_spec).collect()
}
