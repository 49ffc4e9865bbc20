//! Loading one method of a model through the mlhost plugins, and running it on a full batch.

use crate::config::Params;
use anyhow::{anyhow, Context};
use mlhost::cli::run::{choose_class, load_model};
use mlhost::cli::BackendArgs;
use mlhost::serve::batcher::MethodSig;
use mlhost::PluginRegistry;
use plugin_api::{ModelBox, NamedTensor, Tensor};
use std::path::Path;

/// A loaded model and the signature of the method served from it.
pub struct LoadedMethod {
    /// The plugin model.
    pub model: ModelBox,
    /// The served method: input, outputs, compiled batch.
    pub sig: MethodSig,
}

/// Loads `dir` as `mlhost run` does (a compiled directory, or a diffusers directory compiled with
/// `params.rbln_config`), picks `params.method` and runs it once on zeros.
pub fn load(
    registry: &PluginRegistry,
    dir: &Path,
    params: &Params,
) -> anyhow::Result<LoadedMethod> {
    if !dir.is_dir() {
        return Err(anyhow!(
            "model directory {} does not exist (set parameter \"model_dir\", relative to the \
             model's directory, or put the model in the version directory)",
            dir.display()
        ));
    }
    let dir_str = dir
        .to_str()
        .ok_or_else(|| anyhow!("{}: not a UTF-8 path", dir.display()))?;
    let backend = BackendArgs {
        class: params.class.clone(),
        compiler: params.compiler.clone(),
        device: params.device.clone(),
    };
    let class = choose_class(registry, &backend, dir_str)?;
    let compiled = registry
        .model_class(&class)?
        .is_compiled_dir(dir_str.into());
    let model = load_model(
        registry,
        &backend,
        &class,
        dir_str,
        compiled,
        params.rbln_config.clone(),
    )?;
    let sig = signature(&model, &params.method)
        .with_context(|| format!("{class} loaded from {}", dir.display()))?;
    let loaded = LoadedMethod { model, sig };
    let zeros = vec![0.0; loaded.sig.batch * row(&loaded.sig.input.1)];
    loaded
        .run(zeros)
        .map_err(|e| anyhow!("warming up {} of {}: {e}", params.method, dir.display()))?;
    Ok(loaded)
}

fn row(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// The signature of `method` among the model's methods.
pub fn signature(model: &ModelBox, method: &str) -> anyhow::Result<MethodSig> {
    let methods = model.methods().into_vec();
    let Some(spec) = methods.iter().find(|m| m.name.as_str() == method) else {
        let names: Vec<&str> = methods.iter().map(|m| m.name.as_str()).collect();
        return Err(anyhow!(
            "the model has no method \"{method}\" (it has: {}){}",
            names.join(", "),
            if method == "encode" {
                "; compile it with uses_encoder=true"
            } else {
                ""
            }
        ));
    };
    let [input] = spec.inputs.as_slice() else {
        return Err(anyhow!(
            "{method} takes {} inputs; only single-input methods can be served",
            spec.inputs.len()
        ));
    };
    let shape = input.shape();
    let Some((&batch, dims)) = shape.split_first() else {
        return Err(anyhow!("{method}: the input has no batch dimension"));
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

impl LoadedMethod {
    /// Values per item of the input.
    pub fn input_row(&self) -> usize {
        row(&self.sig.input.1)
    }

    /// Runs the method on one full batch (`batch * input_row` values); outputs in signature
    /// order, each `batch` rows.
    pub fn run(&self, input: Vec<f32>) -> Result<Vec<Vec<f32>>, String> {
        let sig = &self.sig;
        let mut shape = vec![sig.batch];
        shape.extend(&sig.input.1);
        let tensor = Tensor::new(shape, input).map_err(|e| e.to_string())?;
        let inputs = vec![NamedTensor::new(sig.input.0.clone(), tensor)];
        let outs = self
            .model
            .call(sig.method.as_str().into(), inputs.into(), "{}".into())
            .into_result()
            .map_err(|e| format!("{}: {e}", sig.method))?
            .into_vec();
        sig.outputs
            .iter()
            .map(|(name, dims)| {
                let t = outs
                    .iter()
                    .find(|t| t.name.as_str() == name)
                    .ok_or_else(|| format!("{} returned no `{name}`", sig.method))?;
                if t.tensor.data().len() != sig.batch * row(dims) {
                    return Err(format!(
                        "{} returned `{name}` of shape {:?}, expected {:?} per item",
                        sig.method,
                        t.tensor.shape(),
                        dims
                    ));
                }
                Ok(t.tensor.data().to_vec())
            })
            .collect()
    }
}
