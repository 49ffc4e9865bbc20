//! The Triton model configuration as this backend reads it: the `parameters` that say what to
//! load, auto-completion of inputs / outputs / max_batch_size from the compiled model, and the
//! checks of a configuration against it. Triton hands the configuration over as JSON (protobuf
//! JSON: int64 values may arrive as strings).

use mlhost::models::MethodSig;
use serde_json::{json, Map, Value};

/// A configuration error; the message names the field and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// The `parameters` keys this backend accepts.
pub const PARAMETER_KEYS: [&str; 9] = [
    "method",
    "model_dir",
    "rbln_config",
    "class",
    "compiler",
    "device",
    "subfolder",
    "revision",
    "variant",
];

/// What to load, from the model configuration's `parameters`.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// `encode` or `decode`.
    pub method: String,
    /// The model directory (compiled, or diffusers compiled at load), relative to the model's
    /// directory in the repository, or (no such path) a Hugging Face Hub id `org/name`; None:
    /// the version directory (`<model>/<version>`).
    pub model_dir: Option<String>,
    /// rbln_* overrides (compile-time fields); on a compiled directory they must match it.
    pub rbln_config: Map<String, Value>,
    /// Model class, compiler and device names (defaults as in `mlhost run`).
    pub class: Option<String>,
    pub compiler: Option<String>,
    pub device: Option<String>,
    /// A subfolder of the model directory or Hub repository (default: `vae` when it holds
    /// `model_index.json`).
    pub subfolder: Option<String>,
    /// A Hub id's branch, tag or commit (default `main`).
    pub revision: Option<String>,
    /// The weights variant (`diffusion_pytorch_model.<variant>.safetensors`).
    pub variant: Option<String>,
}

/// Reads `parameters` of a model configuration.
pub fn parse_params(config: &Value) -> Result<Params, ConfigError> {
    let mut values = Map::new();
    if let Some(params) = config.get("parameters") {
        let Some(params) = params.as_object() else {
            return err("parameters must be a map of key -> {string_value: ...}");
        };
        for (key, v) in params {
            if !PARAMETER_KEYS.contains(&key.as_str()) {
                return err(format!(
                    "unknown parameter \"{key}\" (accepted: {})",
                    PARAMETER_KEYS.join(", ")
                ));
            }
            let Some(s) = v.get("string_value").and_then(Value::as_str) else {
                return err(format!("parameter \"{key}\" has no string_value"));
            };
            values.insert(key.clone(), Value::String(s.trim().to_string()));
        }
    }
    let text = |k: &str| {
        values
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let method = match text("method").as_deref() {
        Some(m @ ("encode" | "decode")) => m.to_string(),
        Some(other) => {
            return err(format!(
                "parameter \"method\" is \"{other}\"; it must be \"encode\" or \"decode\""
            ))
        }
        None => {
            return err(
                "parameter \"method\" is missing; set it to \"encode\" or \"decode\" \
                 (parameters { key: \"method\" value { string_value: \"decode\" } })",
            )
        }
    };
    let rbln_config = match text("rbln_config") {
        None => Map::new(),
        Some(s) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                return err(format!(
                    "parameter \"rbln_config\" must be a JSON object, got {other}"
                ))
            }
            Err(e) => {
                return err(format!(
                    "parameter \"rbln_config\" is not valid JSON ({e}): {s}"
                ))
            }
        },
    };
    Ok(Params {
        method,
        model_dir: text("model_dir"),
        rbln_config,
        class: text("class"),
        compiler: text("compiler"),
        device: text("device"),
        subfolder: text("subfolder"),
        revision: text("revision"),
        variant: text("variant"),
    })
}

/// An integer that protobuf JSON may have written as a string.
fn int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn dims_of(tensor: &Value, what: &str) -> Result<Vec<i64>, ConfigError> {
    let Some(dims) = tensor.get("dims").and_then(Value::as_array) else {
        return err(format!("{what} has no dims"));
    };
    dims.iter()
        .map(|d| {
            int(d).ok_or_else(|| ConfigError(format!("{what}: dims value {d} is not an integer")))
        })
        .collect()
}

fn tensor_entry(name: &str, dims: &[usize]) -> Value {
    json!({"name": name, "data_type": "TYPE_FP32", "dims": dims})
}

/// Fills what the configuration leaves out (`max_batch_size` 0, no `input`, no `output`) from
/// the compiled signature. Returns None when nothing was missing.
pub fn auto_complete(config: &Value, sig: &MethodSig) -> Option<Value> {
    let mut out = config.clone();
    let obj = out.as_object_mut()?;
    let mut changed = false;
    if obj.get("max_batch_size").and_then(int).unwrap_or(0) == 0 {
        obj.insert("max_batch_size".into(), json!(sig.batch));
        changed = true;
    }
    let empty = |v: Option<&Value>| v.and_then(Value::as_array).is_none_or(|a| a.is_empty());
    if empty(obj.get("input")) {
        obj.insert(
            "input".into(),
            json!([tensor_entry(&sig.input.0, &sig.input.1)]),
        );
        changed = true;
    }
    if empty(obj.get("output")) {
        let outs: Vec<Value> = sig
            .outputs
            .iter()
            .map(|(n, d)| tensor_entry(n, d))
            .collect();
        obj.insert("output".into(), Value::Array(outs));
        changed = true;
    }
    changed.then_some(out)
}

/// What the served configuration settles: the batch limit and the outputs it declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// `max_batch_size` (1..=compiled batch).
    pub max_batch_size: usize,
    /// The declared outputs, a subset of the method's, in configuration order.
    pub outputs: Vec<String>,
}

/// Checks a (completed) configuration against the compiled signature.
pub fn check(config: &Value, sig: &MethodSig) -> Result<Served, ConfigError> {
    let method = &sig.method;
    let mbs = config.get("max_batch_size").and_then(int).unwrap_or(0);
    if mbs < 1 || mbs as usize > sig.batch {
        return err(format!(
            "max_batch_size is {mbs}; it must be between 1 and the compiled batch_size {} \
             (leave it out to take the compiled value)",
            sig.batch
        ));
    }
    let inputs = config
        .get("input")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let [input] = inputs.as_slice() else {
        return err(format!(
            "{method} takes one input `{}`; the configuration declares {}",
            sig.input.0,
            inputs.len()
        ));
    };
    check_tensor(input, "input", &sig.input.0, &sig.input.1)?;
    let outputs = config
        .get("output")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if outputs.is_empty() {
        return err(format!("{method}: the configuration declares no output"));
    }
    let mut names = Vec::new();
    for o in &outputs {
        let name = o.get("name").and_then(Value::as_str).unwrap_or_default();
        let Some((_, dims)) = sig.outputs.iter().find(|(n, _)| n == name) else {
            let known: Vec<&str> = sig.outputs.iter().map(|(n, _)| n.as_str()).collect();
            return err(format!(
                "output \"{name}\": {method} has no such output (it has: {})",
                known.join(", ")
            ));
        };
        check_tensor(o, "output", name, dims)?;
        names.push(name.to_string());
    }
    Ok(Served {
        max_batch_size: mbs as usize,
        outputs: names,
    })
}

fn check_tensor(t: &Value, kind: &str, want_name: &str, want: &[usize]) -> Result<(), ConfigError> {
    let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
    if name != want_name {
        return err(format!(
            "{kind} \"{name}\": the compiled model's {kind} is named \"{want_name}\""
        ));
    }
    let dtype = t
        .get("data_type")
        .and_then(Value::as_str)
        .unwrap_or("TYPE_INVALID");
    if dtype != "TYPE_FP32" {
        return err(format!(
            "{kind} \"{name}\": data_type is {dtype}; the model computes TYPE_FP32"
        ));
    }
    let dims = dims_of(t, &format!("{kind} \"{name}\""))?;
    let want_i: Vec<i64> = want.iter().map(|&d| d as i64).collect();
    if dims != want_i {
        return err(format!(
            "{kind} \"{name}\": dims are {dims:?}; the model was compiled for {want_i:?} \
             (without the batch dimension)"
        ));
    }
    if t.get("reshape").is_some_and(|r| !r.is_null()) {
        return err(format!("{kind} \"{name}\": reshape is not supported"));
    }
    Ok(())
}

/// Checks the backend API version of the server against the one we were written for: same major,
/// minor at least ours.
pub fn check_api_version(major: u32, minor: u32) -> Result<(), String> {
    use crate::version::{MAJOR, MINOR};
    if major != MAJOR {
        return Err(format!(
            "the rbln backend was built for TRITONBACKEND API {MAJOR}.{MINOR}, but this Triton \
             server provides API {major}.{minor}: the major versions differ, so the backend \
             cannot be used with this server"
        ));
    }
    if minor < MINOR {
        return Err(format!(
            "the rbln backend needs TRITONBACKEND API {MAJOR}.{MINOR} or a later {MAJOR}.x, but \
             this Triton server provides only {major}.{minor}; use a newer Triton"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
