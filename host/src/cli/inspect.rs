//! `mlhost inspect`: a compiled model's rbln_config.json and each artifact's summary.

use crate::error::{plugin, require_dir, UsageError};
use crate::plugins::PluginRegistry;
use clap::Args;
use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Arguments of `mlhost inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// A compiled model directory (holding rbln_config.json).
    pub compiled_dir: PathBuf,
    /// The compiler that wrote the artifacts (default: the only one loaded, else rbln-npu).
    #[arg(long, value_name = "NAME")]
    pub compiler: Option<String>,
}

/// Prints the report to stdout.
pub fn run(registry: &PluginRegistry, args: &InspectArgs) -> anyhow::Result<()> {
    print!("{}", report(registry, args)?);
    // Not in `report`, whose text is machine-independent (snapshots): the cores are this
    // machine's.
    if let Some(line) = devices_line(registry) {
        println!("\n{line}");
    }
    Ok(())
}

/// The names of the compiled parts listed in `_compile_cfgs`.
pub fn compiled_parts(config: &Value, path: &Path) -> Result<Vec<String>, UsageError> {
    let bad = |what: String| UsageError(format!("{}: {what}", path.display()));
    let cfgs = config
        .get("_compile_cfgs")
        .ok_or_else(|| bad("missing field `_compile_cfgs`".into()))?
        .as_array()
        .ok_or_else(|| bad("field `_compile_cfgs` must be an array".into()))?;
    cfgs.iter()
        .enumerate()
        .map(|(i, cfg)| {
            cfg.get("compiled_model_name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    bad(format!(
                        "`_compile_cfgs[{i}].compiled_model_name` is missing or not a string"
                    ))
                })
        })
        .collect()
}

/// The report as text.
pub fn report(registry: &PluginRegistry, args: &InspectArgs) -> anyhow::Result<String> {
    let dir = &args.compiled_dir;
    require_dir(dir, "compiled model directory")?;
    let index_path = dir.join("model_index.json");
    if !dir.join("rbln_config.json").exists() && index_path.is_file() {
        return report_pipeline_dir(registry, args, &index_path);
    }
    let config_path = dir.join("rbln_config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        UsageError(format!(
            "{} is not a compiled model: cannot read {}: {e}",
            dir.display(),
            config_path.display()
        ))
    })?;
    let config: Value = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("{} is not valid JSON: {e}", config_path.display())))?;
    let parts = compiled_parts(&config, &config_path)?;

    let compiler_name = registry.select_compiler(args.compiler.as_deref())?;
    let compiler = registry.compiler(&compiler_name)?;
    let ext = compiler.artifact_extension().into_string();

    let mut out = String::new();
    let _ = writeln!(out, "{}:", config_path.display());
    let _ = writeln!(out, "{}", pretty_json(&config));

    for part in parts {
        let file = dir.join(format!("{part}.{ext}"));
        let bytes = std::fs::read(&file).map_err(|e| {
            UsageError(format!(
                "compiled part `{part}` listed in {}: cannot read {}: {e}",
                config_path.display(),
                file.display()
            ))
        })?;
        let summary = plugin(compiler.inspect(bytes.as_slice().into())).map_err(|e| {
            e.context(format!(
                "inspecting {} with {compiler_name}",
                file.display()
            ))
        })?;
        let _ = writeln!(
            out,
            "\n== {part}: {} ({} bytes) ==",
            file.display(),
            bytes.len()
        );
        let _ = writeln!(out, "{}", summary.as_str().trim_end());
    }
    Ok(out)
}

/// Where the parts would run: the default device plugin's devices (`Device::devices_json`).
/// Placement is a runtime option (`device`, `device_map` in rbln_config), not stored in the
/// compiled directory; a served model shows it in `/v2/models/{m}`.
fn devices_line(registry: &PluginRegistry) -> Option<String> {
    let name = registry.select_device(None).ok()?;
    let listed: Value =
        serde_json::from_str(registry.device(&name).ok()?.devices_json().as_str()).ok()?;
    let devices: Vec<String> = listed
        .as_array()?
        .iter()
        .map(|d| match d.get("cores").and_then(Value::as_array) {
            Some(c) => format!(
                "{} (cores {})",
                d["id"],
                inline_json(&Value::Array(c.clone()))
            ),
            None => d["id"].to_string(),
        })
        .collect();
    Some(format!(
        "devices of {name}: {}; each part runs on device 0 unless rbln_config's device / \
         device_map place it when the model is loaded (served models show it in \
         /v2/models/{{m}} parameters.runtime)",
        devices.join(", ")
    ))
}

/// The report of a compiled manifest directory (`mlhost compile MANIFEST -o DIR`): its
/// model_index.json, then each model's report.
fn report_pipeline_dir(
    registry: &PluginRegistry,
    args: &InspectArgs,
    index_path: &Path,
) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(index_path)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", index_path.display())))?;
    let index: Value = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("{} is not valid JSON: {e}", index_path.display())))?;
    let parts = index
        .as_object()
        .ok_or_else(|| UsageError(format!("{} must be a JSON object", index_path.display())))?;
    let mut out = format!("{}:\n{}\n", index_path.display(), pretty_json(&index));
    for name in parts.keys().filter(|k| !k.starts_with('_')) {
        let sub = InspectArgs {
            compiled_dir: args.compiled_dir.join(name),
            compiler: args.compiler.clone(),
        };
        let _ = writeln!(out, "\n==== model {name} ====");
        out.push_str(&report(registry, &sub)?);
    }
    Ok(out)
}

/// Pretty JSON like `serde_json::to_string_pretty`, except that arrays whose compact form fits
/// in 72 characters (shapes, `input_info` entries) stay on one line.
pub fn pretty_json(value: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, value, 0);
    out
}

/// One-line JSON with a space after `,` and `:`.
fn inline_json(value: &Value) -> String {
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(inline_json).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), inline_json(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        other => other.to_string(),
    }
}

fn write_json(out: &mut String, value: &Value, indent: usize) {
    let pad = |n: usize| "  ".repeat(n);
    match value {
        Value::Array(items) if !items.is_empty() => {
            let compact = inline_json(value);
            if compact.len() <= 72 {
                out.push_str(&compact);
                return;
            }
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                write_json(out, item, indent + 1);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (key, item)) in map.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(": ");
                write_json(out, item, indent + 1);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parts_come_from_compile_cfgs() {
        let p = Path::new("m/rbln_config.json");
        let cfg = json!({"_compile_cfgs": [{"compiled_model_name": "encoder"},
                                            {"compiled_model_name": "decoder"}]});
        assert_eq!(compiled_parts(&cfg, p).unwrap(), vec!["encoder", "decoder"]);
        let e = compiled_parts(&json!({}), p).unwrap_err().to_string();
        assert!(
            e.contains("_compile_cfgs") && e.contains("m/rbln_config.json"),
            "{e}"
        );
        let e = compiled_parts(&json!({"_compile_cfgs": [{}]}), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("_compile_cfgs[0].compiled_model_name"), "{e}");
    }

    #[test]
    fn pretty_json_keeps_short_arrays_inline_and_round_trips() {
        let v = json!({"a": [["x", [1, 3, 32, 32], "float32"]], "b": {}, "c": "s,t",
                       "d": [{"k": null}], "e": (0..40).collect::<Vec<u32>>(), "f": ["a,b"]});
        let text = pretty_json(&v);
        assert!(
            text.contains(r#""a": [["x", [1, 3, 32, 32], "float32"]]"#),
            "{text}"
        );
        assert!(text.contains(r#""d": [{"k": null}]"#), "{text}");
        assert!(text.contains(r#""f": ["a,b"]"#), "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
    }
}
