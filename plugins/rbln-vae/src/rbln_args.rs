//! Parsing user-given `rbln_config` / `rbln_*` keyword values: every key typed and checked, with
//! errors naming the field and the value.

use plugin_api::{DType, PluginError};
use serde_json::{Map, Value};

/// The `cls_name` written to and expected in `rbln_config.json`.
pub const CLS_NAME: &str = "RBLNAutoencoderKLConfig";

/// `device`: one device index or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A single device.
    One(u64),
    /// Several devices.
    Many(Vec<u64>),
}

/// The compile-time keys, in the order `rbln_config.json` writes them (after `_compile_cfgs`).
pub(crate) const COMPILE_KEYS: [&str; 13] = [
    "dtype",
    "npu",
    "num_devices",
    "batch_size",
    "uses_encoder",
    "vae_scale_factor",
    "in_channels",
    "latent_channels",
    "sample_size",
    "winograd",
    "memory_budget",
    "slicing",
    "tiling",
];
/// The runtime keys, never written to `rbln_config.json`.
pub(crate) const RUNTIME_KEYS: [&str; 5] = [
    "device",
    "device_map",
    "create_runtimes",
    "activate_profiler",
    "timeout",
];

/// Every key a user may give, parsed. `None` = not given (JSON `null` counts as not given).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Args {
    pub batch_size: Option<usize>,
    pub sample_size: Option<Vec<(usize, usize)>>,
    pub uses_encoder: Option<bool>,
    pub vae_scale_factor: Option<usize>,
    pub in_channels: Option<usize>,
    pub latent_channels: Option<usize>,
    pub dtype: Option<DType>,
    pub npu: Option<String>,
    pub num_devices: Option<u64>,
    pub winograd: Option<bool>,
    pub memory_budget: Option<u64>,
    pub device: Option<DeviceSpec>,
    pub device_map: Option<Vec<(String, u64)>>,
    pub create_runtimes: Option<bool>,
    pub activate_profiler: Option<bool>,
    pub timeout: Option<f64>,
    pub slicing: Option<bool>,
    pub tiling: Option<crate::tiling::Tiling>,
}

fn invalid(msg: String) -> PluginError {
    PluginError::invalid(msg)
}

/// A positive integer, or the message "`field` must be a positive integer, got X".
pub(crate) fn positive(field: &str, v: &Value) -> Result<usize, PluginError> {
    match v.as_u64() {
        Some(n) if n > 0 => Ok(n as usize),
        _ => Err(invalid(format!(
            "{field} must be a positive integer, got {v}"
        ))),
    }
}

fn boolean(field: &str, v: &Value) -> Result<bool, PluginError> {
    v.as_bool()
        .ok_or_else(|| invalid(format!("{field} must be true or false, got {v}")))
}

fn device_index(field: &str, v: &Value) -> Result<u64, PluginError> {
    // Whether the device exists is checked when the model loads, against the devices the
    // backend's device plugin has (`Device::devices_json`).
    v.as_u64().ok_or_else(|| {
        invalid(format!(
            "{field} must be a device index (an integer >= 0), got {v}"
        ))
    })
}

/// `sample_size`: an int `n` (meaning `n x n`) or `[height, width]`.
pub(crate) fn sample_size(v: &Value) -> Result<(usize, usize), PluginError> {
    let bad = || {
        invalid(format!(
            "sample_size must be a positive integer or [height, width] of positive integers, got {v}"
        ))
    };
    if v.is_u64() || v.is_i64() {
        let n = positive("sample_size", v).map_err(|_| bad())?;
        return Ok((n, n));
    }
    match v.as_array().map(|a| a.as_slice()) {
        Some([h, w]) => Ok((
            positive("sample_size", h).map_err(|_| bad())?,
            positive("sample_size", w).map_err(|_| bad())?,
        )),
        _ => Err(bad()),
    }
}

/// `sample_size`: one size (see [`sample_size`]) or a list of sizes, each an int or
/// `[height, width]` (`[[1024, 1024], [1152, 896]]`); a list holding an array is a list of sizes.
/// A size listed twice is an error.
pub(crate) fn sample_sizes(v: &Value) -> Result<Vec<(usize, usize)>, PluginError> {
    let sizes = match v.as_array() {
        Some(items) if items.iter().any(Value::is_array) => items
            .iter()
            .map(sample_size)
            .collect::<Result<Vec<_>, _>>()?,
        Some(items) if items.is_empty() => {
            return Err(invalid("sample_size: the list of sizes is empty".into()))
        }
        _ => vec![sample_size(v)?],
    };
    for (k, s) in sizes.iter().enumerate() {
        if sizes[..k].contains(s) {
            return Err(invalid(format!(
                "sample_size lists [{}, {}] twice",
                s.0, s.1
            )));
        }
    }
    Ok(sizes)
}

/// `dtype`: only `float32` is supported (the runtime computes in f32).
pub(crate) fn dtype(v: &Value) -> Result<DType, PluginError> {
    let name = v.as_str().ok_or_else(|| {
        invalid(format!(
            "dtype must be a string such as \"float32\", got {v}"
        ))
    })?;
    match DType::from_name(name) {
        Some(DType::F32) => Ok(DType::F32),
        Some(other) => Err(PluginError::unsupported(format!(
            "dtype \"{}\" is not supported: the runtime computes in float32 only (weights stored \
             in float16/bfloat16 are upcast at load); use dtype \"float32\"",
            other.name()
        ))),
        None => Err(invalid(format!(
            "dtype \"{name}\" is not a known dtype (float32, float16, bfloat16)"
        ))),
    }
}

/// `memory_budget`: a positive number of bytes.
pub(crate) fn memory_budget(v: &Value) -> Result<u64, PluginError> {
    v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
        invalid(format!(
            "memory_budget must be a positive number of bytes, got {v}"
        ))
    })
}

fn vae_scale_factor(v: &Value) -> Result<usize, PluginError> {
    if let Some(f) = v.as_f64() {
        if f > 0.0 && f.fract() == 0.0 && f <= u32::MAX as f64 {
            return Ok(f as usize);
        }
    }
    Err(invalid(format!(
        "vae_scale_factor must be a positive integer, got {v}"
    )))
}

/// Parses a user map. `cls_name` may be present and must then name our config class; any
/// other unknown key is an error listing all of them.
pub(crate) fn parse_args(map: &Map<String, Value>) -> Result<Args, PluginError> {
    let mut a = Args::default();
    let mut unexpected = Vec::new();
    for (k, v) in map {
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "cls_name" => {
                if v.as_str() != Some(CLS_NAME) {
                    return Err(invalid(format!(
                        "cls_name must be \"{}\", got {v}",
                        CLS_NAME
                    )));
                }
            }
            "batch_size" => a.batch_size = Some(positive(k, v)?),
            "sample_size" => a.sample_size = Some(sample_sizes(v)?),
            "slicing" => a.slicing = Some(boolean(k, v)?),
            "tiling" => a.tiling = Some(crate::tiling::Tiling::from_json(v)?),
            "uses_encoder" => a.uses_encoder = Some(boolean(k, v)?),
            "vae_scale_factor" => a.vae_scale_factor = Some(vae_scale_factor(v)?),
            "in_channels" => a.in_channels = Some(positive(k, v)?),
            "latent_channels" => a.latent_channels = Some(positive(k, v)?),
            "dtype" => a.dtype = Some(dtype(v)?),
            "winograd" => a.winograd = Some(boolean(k, v)?),
            "memory_budget" => a.memory_budget = Some(memory_budget(v)?),
            "npu" => {
                let s = v.as_str().ok_or_else(|| {
                    invalid(format!(
                        "npu must be a string (e.g. \"RBLN-CA25\"), got {v}"
                    ))
                })?;
                a.npu = Some(s.to_string());
            }
            "num_devices" => a.num_devices = Some(positive(k, v)? as u64),
            "device" => {
                a.device = Some(match v {
                    Value::Array(items) if !items.is_empty() => {
                        let ids: Vec<u64> = items
                            .iter()
                            .map(|d| device_index("device", d))
                            .collect::<Result<_, _>>()?;
                        if let Some((i, d)) =
                            ids.iter().enumerate().find(|(i, d)| ids[..*i].contains(d))
                        {
                            return Err(invalid(format!(
                                "device: device {d} is listed twice (at {} and {i})",
                                ids.iter().position(|x| x == d).unwrap_or(0)
                            )));
                        }
                        DeviceSpec::Many(ids)
                    }
                    Value::Array(_) => {
                        return Err(invalid("device must not be an empty list".into()))
                    }
                    d => DeviceSpec::One(device_index("device", d)?),
                })
            }
            "device_map" => {
                let m = v.as_object().ok_or_else(|| {
                    invalid(format!(
                        "device_map must be an object like {{\"encoder\": 0, \"decoder\": 0}}, got {v}"
                    ))
                })?;
                let mut out = Vec::new();
                for (part, d) in m {
                    if part != "encoder" && part != "decoder" {
                        return Err(invalid(format!(
                            "device_map: unknown part '{part}' (the parts are encoder and decoder)"
                        )));
                    }
                    out.push((
                        part.clone(),
                        device_index(&format!("device_map.{part}"), d)?,
                    ));
                }
                a.device_map = Some(out);
            }
            "create_runtimes" => a.create_runtimes = Some(boolean(k, v)?),
            "activate_profiler" => a.activate_profiler = Some(boolean(k, v)?),
            "timeout" => match v.as_f64() {
                Some(t) if t > 0.0 && t.is_finite() => a.timeout = Some(t),
                _ => {
                    return Err(invalid(format!(
                        "timeout must be a positive number of seconds, got {v}"
                    )))
                }
            },
            _ => unexpected.push(k.as_str()),
        }
    }
    if !unexpected.is_empty() {
        return Err(invalid(format!(
            "Unexpected arguments: {} (RBLNAutoencoderKLConfig accepts {}, {})",
            unexpected.join(", "),
            COMPILE_KEYS.join(", "),
            RUNTIME_KEYS.join(", ")
        )));
    }
    Ok(a)
}

/// Merges the two user maps; keys of `kwargs` win over `rbln_config`. Both must be JSON objects
/// (or `null`).
pub fn merge_user_config(
    rbln_config: &Value,
    rbln_kwargs: &Value,
) -> Result<Map<String, Value>, PluginError> {
    let mut out = Map::new();
    for (what, v) in [("rbln_config", rbln_config), ("rbln_kwargs", rbln_kwargs)] {
        match v {
            Value::Null => {}
            Value::Object(m) => out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone()))),
            other => {
                return Err(invalid(format!(
                    "{what} must be a JSON object, got {other}"
                )))
            }
        }
    }
    Ok(out)
}
