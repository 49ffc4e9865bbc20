//! Compiler options: a JSON object with `npu`, `num_devices`, `winograd` (bool, default true:
//! 3x3 stride-1 convolutions may use the Winograd kernel; false keeps every convolution on the
//! im2col GEMM, whose results match a plain convolution to float rounding) and `memory_budget`
//! (bytes one run may need; default 3/4 of the physical memory, see
//! [`crate::program::footprint`]).

use crate::program::Target;
use plugin_api::PluginError;

/// Parses `options_json`; an empty string or `{}` means defaults. Unknown keys are an error.
pub fn parse_options(options_json: &str) -> Result<Target, PluginError> {
    let mut target = Target::default();
    if options_json.trim().is_empty() {
        return Ok(target);
    }
    let value: serde_json::Value = serde_json::from_str(options_json)
        .map_err(|e| PluginError::invalid(format!("compiler options are not valid JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| {
        PluginError::invalid(format!(
            "compiler options must be a JSON object, got {value}"
        ))
    })?;
    for (key, v) in obj {
        match key.as_str() {
            "npu" => {
                target.npu = match v {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => {
                        return Err(PluginError::invalid(format!(
                            "compiler option 'npu' must be a string or null, got {other}"
                        )))
                    }
                }
            }
            "num_devices" => {
                target.num_devices = match v {
                    serde_json::Value::Null => None,
                    other => match other.as_u64().filter(|&n| n > 0 && n <= u32::MAX as u64) {
                        Some(n) => Some(n as u32),
                        None => {
                            return Err(PluginError::invalid(format!(
                                "compiler option 'num_devices' must be a positive integer or null, got {other}"
                            )))
                        }
                    },
                }
            }
            "winograd" => {
                target.winograd = v.as_bool().ok_or_else(|| {
                    PluginError::invalid(format!(
                        "compiler option 'winograd' must be true or false, got {v}"
                    ))
                })?
            }
            "memory_budget" => {
                target.memory_budget = match v {
                    serde_json::Value::Null => None,
                    other => Some(other.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                        PluginError::invalid(format!(
                            "compiler option 'memory_budget' must be a positive number of bytes or null, got {other}"
                        ))
                    })?),
                }
            }
            other => {
                return Err(PluginError::invalid(format!(
                    "unknown compiler option '{other}' (accepted: npu, num_devices, winograd, memory_budget)"
                )))
            }
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_values_and_errors() {
        assert_eq!(parse_options("").unwrap(), Target::default());
        assert_eq!(parse_options("{}").unwrap(), Target::default());
        let t = parse_options(r#"{"npu": "RBLN-CA25", "num_devices": 2}"#).unwrap();
        assert_eq!(t.npu.as_deref(), Some("RBLN-CA25"));
        assert_eq!(t.num_devices, Some(2));
        assert_eq!(
            parse_options(r#"{"npu": null, "num_devices": null}"#).unwrap(),
            Target::default()
        );
        let e = parse_options(r#"{"npu": "x", "tensor_parallel": 4}"#).unwrap_err();
        assert!(e.message().contains("'tensor_parallel'"), "{e}");
        assert_eq!(e.kind, plugin_api::ErrorKind::InvalidArgument);
        for bad in [
            r#"{"num_devices": 0}"#,
            r#"{"num_devices": -1}"#,
            r#"{"num_devices": 1.5}"#,
        ] {
            assert!(parse_options(bad)
                .unwrap_err()
                .message()
                .contains("num_devices"));
        }
        assert!(parse_options(r#"{"npu": 3}"#)
            .unwrap_err()
            .message()
            .contains("'npu'"));
        assert!(parse_options("[1]")
            .unwrap_err()
            .message()
            .contains("JSON object"));
        assert!(parse_options("{").is_err());
        assert!(Target::default().winograd);
        assert!(!parse_options(r#"{"winograd": false}"#).unwrap().winograd);
        assert!(parse_options(r#"{"winograd": 1}"#)
            .unwrap_err()
            .message()
            .contains("'winograd'"));
    }
}
