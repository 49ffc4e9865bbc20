//! `mlhost compile`: from_pretrained(export = Yes) on a diffusers directory, then save_pretrained.

use super::{path_str, plugin, require_dir, BackendArgs, UsageError};
use crate::plugins::PluginRegistry;
use crate::progress::BarProgress;
use anyhow::Context;
use clap::Args;
use plugin_api::Export;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `mlhost compile`.
#[derive(Debug, Clone, Args)]
pub struct CompileArgs {
    /// The diffusers checkpoint directory (config.json + weights).
    pub diffusers_dir: PathBuf,
    /// Where to write the compiled model.
    #[arg(short = 'o', long = "output", value_name = "OUT_DIR")]
    pub out_dir: PathBuf,
    /// A JSON file with rbln_config fields.
    #[arg(long = "rbln-config", value_name = "FILE")]
    pub rbln_config: Option<PathBuf>,
    /// Batch size to compile for (overrides --rbln-config).
    #[arg(long)]
    pub batch_size: Option<u64>,
    /// Image size to compile for: N (square) or H,W (overrides --rbln-config).
    #[arg(long, value_name = "N|H,W", value_parser = parse_sample_size)]
    pub sample_size: Option<SampleSize>,
    /// Also compile the encoder (img2img / inpainting); default: decoder only.
    #[arg(long)]
    pub uses_encoder: bool,
    /// Model class, compiler and device.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `--sample-size`: one side or height and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleSize {
    /// A square image of this side.
    Square(u64),
    /// Height and width.
    HeightWidth(u64, u64),
}

impl SampleSize {
    /// As written into `rbln_config`: `N` or `[H, W]`.
    pub fn to_json(self) -> Value {
        match self {
            SampleSize::Square(n) => json!(n),
            SampleSize::HeightWidth(h, w) => json!([h, w]),
        }
    }
}

/// Parses `N` or `H,W`.
pub fn parse_sample_size(s: &str) -> Result<SampleSize, String> {
    let num = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|_| format!("sample size {s:?} must be N or H,W with positive integers"))
    };
    match s.split_once(',') {
        None => Ok(SampleSize::Square(num(s)?)),
        Some((h, w)) => Ok(SampleSize::HeightWidth(num(h)?, num(w)?)),
    }
}

/// Reads `--rbln-config`: a JSON object.
pub fn read_rbln_config(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read rbln config {}: {e}", path.display())))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        UsageError(format!(
            "rbln config {} is not valid JSON: {e}",
            path.display()
        ))
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(UsageError(format!(
            "rbln config {} must be a JSON object, found {}",
            path.display(),
            json_kind(&other)
        ))
        .into()),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The `rbln_*` keyword overrides given on the command line.
pub fn kwargs(args: &CompileArgs) -> Map<String, Value> {
    let mut map = Map::new();
    if let Some(b) = args.batch_size {
        map.insert("batch_size".into(), json!(b));
    }
    if let Some(s) = args.sample_size {
        map.insert("sample_size".into(), s.to_json());
    }
    if args.uses_encoder {
        map.insert("uses_encoder".into(), json!(true));
    }
    map
}

/// Compiles and saves; prints the elapsed time to stderr.
pub fn run(registry: &PluginRegistry, args: &CompileArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    require_dir(&args.diffusers_dir, "diffusers directory")?;
    let config = match &args.rbln_config {
        Some(path) => read_rbln_config(path)?,
        None => Map::new(),
    };
    let class_name = registry.select_model_class(args.backend.class.as_deref())?;
    let compiler = registry.select_compiler(args.backend.compiler.as_deref())?;
    let device = registry.select_device(args.backend.device.as_deref())?;
    let class = registry.model_class(&class_name)?;
    let backend = registry.backend(&compiler, &device)?;
    let out = path_str(&args.out_dir)?;
    tracing::info!(
        "compiling {} as {class_name} with compiler {compiler}, device {device}",
        args.diffusers_dir.display()
    );
    let progress = BarProgress::stderr();
    let model = plugin(class.from_pretrained(
        path_str(&args.diffusers_dir)?.into(),
        Export::Yes,
        Value::Object(config).to_string().as_str().into(),
        Value::Object(kwargs(args)).to_string().as_str().into(),
        backend,
        &progress.to_box(),
    ))
    .with_context(|| format!("compiling {} as {class_name}", args.diffusers_dir.display()))?;
    progress.finish();
    plugin(model.save_pretrained(out.into()))
        .with_context(|| format!("saving the compiled model to {out}"))?;
    eprintln!(
        "compiled {} ({class_name}) to {} in {:.2?}",
        args.diffusers_dir.display(),
        args.out_dir.display(),
        start.elapsed()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_size_forms() {
        assert_eq!(parse_sample_size("64").unwrap(), SampleSize::Square(64));
        assert_eq!(
            parse_sample_size("64, 32").unwrap(),
            SampleSize::HeightWidth(64, 32)
        );
        assert!(parse_sample_size("64x32").unwrap_err().contains("64x32"));
        assert_eq!(SampleSize::HeightWidth(8, 16).to_json(), json!([8, 16]));
    }

    #[test]
    fn rbln_config_must_be_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg.json");
        std::fs::write(&path, "[1]").unwrap();
        let e = read_rbln_config(&path).unwrap_err().to_string();
        assert!(e.contains("cfg.json") && e.contains("an array"), "{e}");
        std::fs::write(&path, r#"{"batch_size": 2}"#).unwrap();
        assert_eq!(read_rbln_config(&path).unwrap()["batch_size"], json!(2));
    }
}
