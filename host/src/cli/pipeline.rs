//! `mlhost pipeline`: runs one pipeline of a manifest once on files.

use crate::error::UsageError;
use crate::io;
use crate::models::manifest::open_manifest;
use crate::models::pipeline::load_models;
use crate::pipeline::exec;
use crate::pipeline::ops::Data;
use crate::pipeline::spec::PortType;
use crate::plugins::plugin_search_path;
use anyhow::Context;
use clap::Args;
use plugin_api::NamedTensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `mlhost pipeline`.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// The manifest declaring the pipeline.
    pub manifest: PathBuf,
    /// The pipeline's name.
    pub pipeline: String,
    /// `NAME=FILE`: an input (image: a PNG or JPEG file; tensor: a .safetensors file holding
    /// tensor NAME); repeatable.
    #[arg(long = "input", value_name = "NAME=FILE")]
    pub inputs: Vec<String>,
    /// `NAME=FILE`: an output to write (image: PNG; tensor: .safetensors with tensor NAME);
    /// repeatable.
    #[arg(long = "output", value_name = "NAME=FILE")]
    pub outputs: Vec<String>,
    /// Print the resolved step graph as JSON and exit without running.
    #[arg(long)]
    pub print_graph: bool,
}

fn split(arg: &str, flag: &str) -> anyhow::Result<(String, PathBuf)> {
    match arg.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_string(), PathBuf::from(file)))
        }
        _ => Err(UsageError(format!("{flag} {arg:?} must be NAME=FILE")).into()),
    }
}

/// Reads one pipeline input from a file.
pub fn read_input(name: &str, ty: PortType, file: &Path) -> anyhow::Result<Data> {
    Ok(match ty {
        PortType::Image => Data::Bytes(Arc::new(std::fs::read(file).map_err(|e| {
            UsageError(format!(
                "input \"{name}\": cannot read {}: {e}",
                file.display()
            ))
        })?)),
        PortType::Tensor => Data::Tensor(io::read_safetensors(file, name)?),
    })
}

/// Writes one pipeline output to a file.
pub fn write_output(name: &str, data: &Data, file: &Path) -> anyhow::Result<()> {
    match data {
        Data::Bytes(b) => io::write_atomically(file, b)?,
        Data::Tensor(t) => io::write_safetensors(file, &[NamedTensor::new(name, t.clone())])?,
    }
    Ok(())
}

/// Runs the command.
pub fn run(plugin_dirs: &[PathBuf], args: &PipelineArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let search = plugin_search_path(plugin_dirs)?;
    let (manifest, registry) = open_manifest(&args.manifest, &search)?;
    let p = manifest.pipeline(&args.pipeline).ok_or_else(|| {
        let names: Vec<&str> = manifest.resolved.iter().map(|p| p.name.as_str()).collect();
        UsageError(format!(
            "{}: no pipeline \"{}\" (pipelines: {})",
            args.manifest.display(),
            args.pipeline,
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        ))
    })?;
    if args.print_graph {
        println!("{}", serde_json::to_string_pretty(p)?);
        return Ok(());
    }
    let mut inputs = BTreeMap::new();
    for arg in &args.inputs {
        let (name, file) = split(arg, "--input")?;
        let ty = *p.inputs.get(&name).ok_or_else(|| {
            let known: Vec<&str> = p.inputs.keys().map(String::as_str).collect();
            UsageError(format!(
                "pipeline \"{}\" has no input \"{name}\" (inputs: {})",
                p.name,
                known.join(", ")
            ))
        })?;
        inputs.insert(name.clone(), read_input(&name, ty, &file)?);
    }
    let mut outputs = Vec::new();
    for arg in &args.outputs {
        let (name, file) = split(arg, "--output")?;
        if !p.outputs.contains_key(&name) {
            let known: Vec<&str> = p.outputs.keys().map(String::as_str).collect();
            return Err(UsageError(format!(
                "pipeline \"{}\" has no output \"{name}\" (outputs: {})",
                p.name,
                known.join(", ")
            ))
            .into());
        }
        if let Some(parent) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::error::require_dir(parent, "output directory")?;
        }
        outputs.push((name, file));
    }
    exec::check_inputs(p, &inputs).map_err(|e| UsageError(e.to_string()))?;

    let models = load_models(&registry, &manifest, p)?;
    let results = exec::run(p, inputs, &models).map_err(|e| {
        if e.is_user_error() {
            anyhow::Error::from(UsageError(e.to_string()))
        } else {
            anyhow::Error::from(e)
        }
    })?;
    for (name, file) in &outputs {
        write_output(name, &results[name], file)
            .with_context(|| format!("writing output \"{name}\""))?;
        eprintln!("{}: wrote \"{name}\" to {}", p.name, file.display());
    }
    eprintln!("{}: done in {:.2?}", p.name, start.elapsed());
    Ok(())
}
