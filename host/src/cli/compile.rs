//! `mlhost compile`: from_pretrained(export = Yes) on a diffusers directory, then save_pretrained.

use super::backend::BackendArgs;
use crate::error::{path_str, plugin, require_dir, UsageError};
use crate::models::load::{open, open_manifest_model, LoadSpec, Overrides};
use crate::models::manifest::open_manifest;
use crate::models::resolve::is_plugin_path;
use crate::models::Choice;
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
    /// The diffusers checkpoint directory (config.json + weights) or Hugging Face Hub id
    /// (org/name), or a manifest (.yaml) whose models are all compiled into OUT_DIR (one
    /// directory each, model_index.json, manifest.yaml).
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
    /// Image size to compile for: N (square) or H,W (overrides --rbln-config). Repeat it to
    /// compile several sizes into one directory that stores the weights once.
    #[arg(long, value_name = "N|H,W", value_parser = parse_sample_size)]
    pub sample_size: Vec<SampleSize>,
    /// Also compile the encoder (img2img / inpainting); default: decoder only.
    #[arg(long)]
    pub uses_encoder: bool,
    /// Replace OUT_DIR if it exists and holds a previous `mlhost compile` output (and nothing
    /// else: a directory holding other files is refused and left as it is).
    #[arg(long)]
    pub overwrite: bool,
    /// Subfolder, Hub revision and weights variant.
    #[command(flatten)]
    pub source: super::source::SourceArgs,
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

    /// Several sizes as `rbln_config`'s `sample_size`: one as [`to_json`](Self::to_json),
    /// more as a list of `[H, W]`.
    pub fn list_json(sizes: &[SampleSize]) -> Value {
        match sizes {
            [one] => one.to_json(),
            many => Value::Array(
                many.iter()
                    .map(|s| match *s {
                        SampleSize::Square(n) => json!([n, n]),
                        SampleSize::HeightWidth(h, w) => json!([h, w]),
                    })
                    .collect(),
            ),
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
    args.source.add_variant(&mut map);
    if let Some(b) = args.batch_size {
        map.insert("batch_size".into(), json!(b));
    }
    if !args.sample_size.is_empty() {
        map.insert(
            "sample_size".into(),
            SampleSize::list_json(&args.sample_size),
        );
    }
    if args.uses_encoder {
        map.insert("uses_encoder".into(), json!(true));
    }
    map
}

/// Compiles and saves; prints the elapsed time to stderr.
pub fn run(registry: &PluginRegistry, args: &CompileArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let args = &CompileArgs {
        diffusers_dir: args.source.resolve(&args.diffusers_dir)?,
        ..args.clone()
    };
    require_dir(&args.diffusers_dir, "diffusers directory")?;
    let config = match &args.rbln_config {
        Some(path) => read_rbln_config(path)?,
        None => Map::new(),
    };
    let class_name = registry.select_model_class(args.backend.class.as_deref())?;
    let compiler = registry.select_compiler(args.backend.compiler.as_deref())?;
    let device = registry.select_device(args.backend.device.as_deref())?;
    let output = Output::prepare(&args.diffusers_dir, &args.out_dir, args.overwrite, |dir| {
        compiled_model_dir(registry, dir)
    })?;
    let out = path_str(&output.staged)?;
    tracing::info!(
        "compiling {} as {class_name} with compiler {compiler}, device {device}",
        args.diffusers_dir.display()
    );
    let spec = LoadSpec {
        dir: &args.diffusers_dir,
        export: Export::Yes,
        choice: Choice {
            class: Some(class_name.clone()),
            compiler: Some(compiler),
            device: Some(device),
        },
        overrides: Overrides {
            rbln_config: config,
            kwargs: kwargs(args),
        },
    };
    let model = open(registry, &class_name, &spec, &BarProgress::stderr())
        .with_context(|| format!("compiling {} as {class_name}", args.diffusers_dir.display()))?;
    plugin(model.save_pretrained(out.into()))
        .with_context(|| format!("saving the compiled model to {}", args.out_dir.display()))?;
    output.finish()?;
    eprintln!(
        "compiled {} ({class_name}) to {} in {:.2?}",
        args.diffusers_dir.display(),
        args.out_dir.display(),
        start.elapsed()
    );
    Ok(())
}

/// True if `path` names a manifest (`.yaml` / `.yml`) rather than a model directory.
pub fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// `mlhost compile MANIFEST -o DIR`: loads the manifest's plugins and compiles every model.
pub fn run_manifest(plugin_dirs: &[PathBuf], args: &CompileArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let s = &args.source;
    if args.rbln_config.is_some()
        || args.batch_size.is_some()
        || !args.sample_size.is_empty()
        || args.uses_encoder
        || s.subfolder.is_some()
        || s.revision.is_some()
        || s.variant.is_some()
    {
        return Err(UsageError(
            "--rbln-config, --batch-size, --sample-size, --uses-encoder, --subfolder, \
             --revision and --variant apply to a model directory or Hub id; a manifest sets \
             them per model and pipeline"
                .into(),
        )
        .into());
    }
    let search = crate::plugins::plugin_search_path(plugin_dirs)?;
    let (manifest, registry) = open_manifest(&args.diffusers_dir, &search)?;
    compile_manifest_with(&registry, &manifest, &args.out_dir, args.overwrite)?;
    eprintln!(
        "compiled {} model(s) of {} to {} in {:.2?}",
        manifest.models.len(),
        args.diffusers_dir.display(),
        args.out_dir.display(),
        start.elapsed()
    );
    Ok(())
}

/// Compiles every model of `manifest` into `out/<model name>/`, and writes `out/model_index.json`
/// (each part's plugin and class, like a saved optimum-rbln pipeline) and `out/manifest.yaml`
/// (the manifest with every model loading its compiled directory, `export: false`). Written to a
/// temporary sibling and renamed into place; `out` must not exist (or be empty).
pub fn compile_manifest(
    registry: &PluginRegistry,
    manifest: &crate::manifest::Manifest,
    out: &Path,
) -> anyhow::Result<()> {
    compile_manifest_with(registry, manifest, out, false)
}

/// [`compile_manifest`]; with `overwrite`, an existing `out` that holds a previous compiled
/// manifest directory (and nothing else) is replaced.
pub fn compile_manifest_with(
    registry: &PluginRegistry,
    manifest: &crate::manifest::Manifest,
    out: &Path,
    overwrite: bool,
) -> anyhow::Result<()> {
    let output = Output::prepare(&manifest.file, out, overwrite, |dir| {
        compiled_manifest_dir(registry, dir)
    })?;
    std::fs::create_dir(&output.staged)
        .with_context(|| format!("creating {}", output.staged.display()))?;
    let staged = output.staged.as_path();
    let mut index = Map::new();
    let kinds: std::collections::BTreeSet<&str> = manifest
        .resolved
        .iter()
        .filter_map(|p| p.kind.map(|k| k.name()))
        .collect();
    index.insert(
        "_class_name".into(),
        match kinds.iter().next() {
            Some(k) if kinds.len() == 1 => json!(format!("RBLN{k}")),
            _ => Value::Null,
        },
    );
    index.insert("_mlhost_version".into(), json!(env!("CARGO_PKG_VERSION")));
    index.insert(
        "_pipelines".into(),
        manifest
            .resolved
            .iter()
            .map(|p| (p.name.clone(), json!(p.kind.map(|k| k.name()))))
            .collect::<Map<String, Value>>()
            .into(),
    );
    for entry in &manifest.models {
        let (class, model) = open_manifest_model(registry, manifest, entry, Export::Yes)?;
        let dir = staged.join(&entry.name);
        plugin(model.save_pretrained(path_str(&dir)?.into()))
            .with_context(|| format!("saving model \"{}\" to {}", entry.name, dir.display()))?;
        let provider = registry.model_classes[&class].plugin;
        let plugin_name = registry.plugin(provider).info.name.to_string();
        index.insert(entry.name.clone(), json!([plugin_name, class]));
    }
    let text = serde_json::to_string_pretty(&Value::Object(index))? + "\n";
    std::fs::write(staged.join("model_index.json"), text).context("writing model_index.json")?;
    std::fs::write(staged.join("manifest.yaml"), compiled_manifest(manifest)?)
        .context("writing manifest.yaml")?;
    output.finish()
}

/// The output of a compile, staged in a temporary sibling of the output directory and put in
/// place whole ([`plugin_api::dir::put_in_place`]) once complete; a failure or a kill leaves the
/// output directory as it was (and at most the temporary sibling behind).
struct Output {
    out: PathBuf,
    /// The temporary sibling, removed when dropped.
    tmp: tempfile::TempDir,
    /// Where the compile writes: inside `tmp`, not yet existing.
    staged: PathBuf,
}

impl Output {
    /// Refuses `out` if it is the input (`input`, or the input's directory), if it exists and
    /// is not empty without `overwrite`, or with `overwrite` if `replaceable` says it is not a
    /// previous output (naming what else it holds).
    fn prepare(
        input: &Path,
        out: &Path,
        overwrite: bool,
        replaceable: impl Fn(&Path) -> Result<(), String>,
    ) -> anyhow::Result<Output> {
        use plugin_api::dir::{is_empty_dir, resolved};
        let target = resolved(out);
        let input_dir = if input.is_dir() {
            resolved(input)
        } else {
            resolved(input.parent().unwrap_or(Path::new(".")))
        };
        if target == input_dir {
            return Err(UsageError(format!(
                "{} is the input directory: compiling into it would replace its files; choose \
                 another output directory",
                out.display()
            ))
            .into());
        }
        if out.exists() && !is_empty_dir(out) {
            if !out.is_dir() {
                return Err(UsageError(format!(
                    "{} already exists and is not a directory",
                    out.display()
                ))
                .into());
            }
            if !overwrite {
                return Err(UsageError(format!(
                    "{} already exists; compile into a new directory, or pass --overwrite to \
                     replace a previous compiled directory",
                    out.display()
                ))
                .into());
            }
            replaceable(out).map_err(|why| {
                UsageError(format!(
                    "--overwrite: {} is not a directory mlhost compiled, so it is not replaced: {why}",
                    out.display()
                ))
            })?;
        }
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        require_dir(parent, "output directory")?;
        let tmp = tempfile::Builder::new()
            .prefix(".mlhost-compile-")
            .tempdir_in(parent)
            .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
        let staged = tmp.path().join("output");
        Ok(Output {
            out: out.to_path_buf(),
            tmp,
            staged,
        })
    }

    /// Puts the staged output in place.
    fn finish(self) -> anyhow::Result<()> {
        plugin_api::dir::put_in_place(&self.staged, &self.out).with_context(|| {
            format!(
                "moving {} into place at {}",
                self.staged.display(),
                self.out.display()
            )
        })?;
        drop(self.tmp);
        Ok(())
    }
}

/// `Ok` if `dir` holds what `mlhost compile` writes for one model: `rbln_config.json`, and
/// otherwise only `config.json` and artifacts of a loaded compiler; else what else it holds.
fn compiled_model_dir(registry: &PluginRegistry, dir: &Path) -> Result<(), String> {
    let exts: Vec<String> = registry
        .compilers
        .values()
        .map(|c| format!(".{}", c.item.artifact_extension()))
        .collect();
    let extra = plugin_api::dir::unexpected_entries(dir, |name, is_dir| {
        !is_dir
            && (name == "rbln_config.json"
                || name == "config.json"
                || exts.iter().any(|e| name.ends_with(e.as_str())))
    })
    .map_err(|e| format!("cannot list it: {e}"))?;
    if !extra.is_empty() {
        return Err(format!("it holds {}", extra.join(", ")));
    }
    if !dir.join("rbln_config.json").is_file() {
        return Err("it has no rbln_config.json".into());
    }
    Ok(())
}

/// `Ok` if `dir` holds what compiling a manifest writes: `model_index.json`, `manifest.yaml`
/// and one compiled model directory per model ([`compiled_model_dir`]).
fn compiled_manifest_dir(registry: &PluginRegistry, dir: &Path) -> Result<(), String> {
    let why = std::cell::RefCell::new(Vec::new());
    let extra = plugin_api::dir::unexpected_entries(dir, |name, is_dir| {
        if is_dir {
            match compiled_model_dir(registry, &dir.join(name)) {
                Ok(()) => true,
                Err(e) => {
                    why.borrow_mut().push(format!("({name}/: {e})"));
                    false
                }
            }
        } else {
            name == "model_index.json" || name == "manifest.yaml"
        }
    })
    .map_err(|e| format!("cannot list it: {e}"))?;
    if !extra.is_empty() {
        let why = why.into_inner().join(" ");
        return Err(format!("it holds {} {why}", extra.join(", "))
            .trim_end()
            .to_string());
    }
    if !dir.join("model_index.json").is_file() {
        return Err("it has no model_index.json".into());
    }
    Ok(())
}

/// The manifest's text with each model's `model_id` pointing at its compiled directory and
/// `export: false`; plugin paths become absolute.
fn compiled_manifest(manifest: &crate::manifest::Manifest) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&manifest.file)
        .with_context(|| format!("reading {}", manifest.file.display()))?;
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text)?;
    if let Some(plugins) = doc.get_mut("plugins").and_then(|p| p.as_sequence_mut()) {
        for p in plugins.iter_mut() {
            if let Some(s) = p.as_str() {
                if is_plugin_path(s) {
                    let abs = std::path::absolute(manifest.dir().join(s))?;
                    *p = serde_yaml::Value::String(abs.display().to_string());
                }
            }
        }
    }
    if let Some(models) = doc.get_mut("models").and_then(|m| m.as_sequence_mut()) {
        for m in models.iter_mut() {
            let Some(map) = m.as_mapping_mut() else {
                continue;
            };
            let name = map
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or("")
                .to_string();
            map.insert("model_id".into(), name.into());
            map.insert("export".into(), false.into());
            // The compiled directory is local and holds no weights file to pick.
            for key in ["subfolder", "revision", "variant"] {
                map.remove(key);
            }
        }
    }
    Ok(format!(
        "# Written by mlhost compile from {}: every model loads its compiled directory.\n{}",
        manifest.file.display(),
        serde_yaml::to_string(&doc)?
    ))
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
