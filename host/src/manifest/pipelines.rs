//! Resolving a manifest's `pipelines`: the derived rbln_config of each model a pipeline uses
//! and each pipeline's step graph, with errors pointing at the manifest's line and column.

use super::{Manifest, ManifestError, ModelEntry};
use crate::pipeline::derive::{self, DeriveError, VaeFacts};
use crate::pipeline::graph::{self, GraphError, ModelFacts, ScalingFields};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Finds where things are in the manifest text, scoped to a pipeline and a step.
struct Locator<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        Locator {
            lines: text.lines().collect(),
        }
    }

    /// The first line at or after `from` holding `key: value` (any value if empty), as
    /// (0-based line, 1-based column of the value, or of the key when the value is empty).
    fn find(&self, from: usize, key: &str, value: &str) -> Option<(usize, usize)> {
        for (n, line) in self.lines.iter().enumerate().skip(from) {
            let mut start = 0;
            while let Some(pos) = line[start..].find(key) {
                let at = start + pos;
                start = at + key.len();
                let before_ok = at == 0
                    || !line[..at]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
                let rest = &line[at + key.len()..];
                let rest = rest.trim_start_matches(['"', '\'']);
                let Some(after) = rest.strip_prefix(':') else {
                    continue;
                };
                if !before_ok {
                    continue;
                }
                if value.is_empty() {
                    return Some((n, at + 1));
                }
                let v = after.trim_start().trim_start_matches(['"', '\'']);
                if v.starts_with(value)
                    && !v[value.len()..]
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
                {
                    return Some((n, line.len() - v.len() + 1));
                }
            }
        }
        None
    }

    /// The line of pipeline `i`'s `name: <name>`.
    fn pipeline(&self, name: &str) -> usize {
        let section = self.find(0, "pipelines", "").map_or(0, |(l, _)| l);
        self.find(section, "name", name).map_or(section, |(l, _)| l)
    }
}

fn at(
    manifest: &Manifest,
    loc: &Locator,
    anchor: usize,
    key: &str,
    value: &str,
    message: String,
) -> ManifestError {
    let (line, column) = loc
        .find(anchor, key, value)
        .or_else(|| loc.find(anchor, key, ""))
        .map_or((anchor + 1, 1), |(l, c)| (l + 1, c));
    ManifestError {
        file: manifest.file.clone(),
        line,
        column,
        message,
    }
}

/// What resolving pipelines needs of a model, as its plugin describes it
/// (`ModelClass::describe_dir`; the host never reads the model's files).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDescription {
    /// Spatial factor between image and latent.
    pub vae_scale_factor: usize,
    /// Whether pipelines run the model in float32.
    pub force_upcast: bool,
    /// Image channels.
    pub in_channels: usize,
    /// The latent scaling fields.
    pub scaling: ScalingFields,
}

/// Describes a manifest's model (an error says why it cannot).
pub type Describe<'a> = dyn Fn(&ModelEntry) -> Result<ModelDescription, String> + 'a;

fn checked(d: ModelDescription) -> Result<ModelDescription, String> {
    let sf = d.scaling.scaling_factor;
    if sf == 0.0 || !sf.is_finite() {
        return Err(format!(
            "scaling_factor must be finite and non-zero, got {sf}"
        ));
    }
    Ok(d)
}

/// Resolves `manifest.pipelines`: derives the rbln_config of each model a pipeline uses (written
/// back into its `rbln_config`) and builds each step graph into `manifest.resolved`.
impl Manifest {
    /// Resolves the manifest's pipelines (derived rbln_configs, step graphs into `resolved`)
    /// with what `describe` says of each model they use; errors point at the manifest's line.
    pub fn resolve_pipelines(&mut self, describe: &Describe) -> Result<(), ManifestError> {
        let text = std::mem::take(&mut self.text);
        let result = resolve(self, &text, describe);
        self.text = text;
        result
    }
}

fn resolve(manifest: &mut Manifest, text: &str, describe: &Describe) -> Result<(), ManifestError> {
    if manifest.pipelines.is_empty() {
        return Ok(());
    }
    let loc = Locator::new(text);
    let mut vae_json = BTreeMap::new();
    for m in &manifest.models {
        let used = manifest.pipelines.iter().any(|p| {
            p.model.as_deref() == Some(&m.name)
                || (p.model.is_none() && manifest.models.len() == 1)
                || p.steps.iter().flatten().any(|s| {
                    s.model.as_deref() == Some(&m.name)
                        || s.params.get("model").and_then(Value::as_str) == Some(&m.name)
                })
        });
        if !used {
            continue;
        }
        let json = describe(m).and_then(checked).map_err(|e| {
            let line = loc.find(0, "name", &m.name).map_or(0, |(l, _)| l);
            at(
                manifest,
                &loc,
                line,
                "model_id",
                "",
                format!("models[\"{}\"].model_id: {e}", m.name),
            )
        })?;
        vae_json.insert(m.name.clone(), json);
    }

    // Derive every model's rbln_config; pipelines sharing a model must agree.
    let mut derived: BTreeMap<String, (String, Map<String, Value>)> = BTreeMap::new();
    let mut seen = BTreeMap::new();
    for (i, p) in manifest.pipelines.iter().enumerate() {
        let anchor = loc.pipeline(&p.name);
        let perr = |key: &str, value: &str, message: String| {
            at(
                manifest,
                &loc,
                anchor,
                key,
                value,
                format!("pipelines[{i}] \"{}\": {message}", p.name),
            )
        };
        if let Some(problem) = super::name_problem(&p.name) {
            return Err(perr(
                "name",
                &p.name,
                format!("not a valid pipeline name: {problem}"),
            ));
        }
        if let Some(other) = seen.insert(p.name.clone(), i) {
            return Err(perr(
                "name",
                &p.name,
                format!("pipeline name is also used by pipelines[{other}]"),
            ));
        }
        if manifest.models.iter().any(|m| m.name == p.name) {
            return Err(perr(
                "name",
                &p.name,
                "a model has the same name; OIP model names must be unique".into(),
            ));
        }
        let model = match &p.model {
            Some(m) if manifest.models.iter().any(|e| &e.name == m) => m.clone(),
            Some(m) => {
                let known: Vec<&str> = manifest.models.iter().map(|e| e.name.as_str()).collect();
                return Err(perr(
                    "model",
                    m,
                    format!(
                        "model \"{m}\" is not declared in models (declared: {})",
                        known.join(", ")
                    ),
                ));
            }
            None if manifest.models.len() == 1 => manifest.models[0].name.clone(),
            None => {
                return Err(perr(
                    "name",
                    &p.name,
                    "`model` is required when the manifest declares more than one model".into(),
                ))
            }
        };
        let Some(kind) = p.kind else {
            if p.steps.is_none() {
                return Err(perr(
                    "name",
                    &p.name,
                    "a pipeline without `kind` needs `steps`".into(),
                ));
            }
            if !p.vae.is_empty()
                || p.height.is_some()
                || p.width.is_some()
                || p.image_size.is_some()
                || p.batch_size.is_some()
            {
                return Err(perr("name", &p.name, "height, width, image_size, batch_size and vae derive the VAE's config from `kind`; set `kind` or put the values in the model's rbln_config".into()));
            }
            continue;
        };
        let entry = manifest
            .models
            .iter()
            .find(|e| e.name == model)
            .expect("checked above");
        let d = &vae_json[&model];
        let facts = &VaeFacts {
            vae_scale_factor: d.vae_scale_factor,
            force_upcast: d.force_upcast,
        };
        let config = derive::vae_rbln_config(p, kind, &model, &entry.rbln_config, facts)
            .map_err(|DeriveError { key, message }| perr(&key, "", message))?;
        if let Some((other, prev)) = derived.get_mut(&model) {
            let mut merged = prev.clone();
            for (k, v) in &config {
                match merged.get(k) {
                    Some(old) if k == "uses_encoder" => {
                        let any = old.as_bool().unwrap_or(false) || v.as_bool().unwrap_or(false);
                        merged.insert(k.clone(), Value::Bool(any));
                    }
                    Some(old) if old != v => {
                        return Err(perr("name", &p.name, format!("model \"{model}\" needs {k} {v} here but {old} for pipeline \"{other}\"; use a model entry per pipeline")));
                    }
                    _ => {
                        merged.insert(k.clone(), v.clone());
                    }
                }
            }
            *prev = merged;
        } else {
            derived.insert(model.clone(), (p.name.clone(), config));
        }
    }
    for m in &mut manifest.models {
        if let Some((_, config)) = derived.remove(&m.name) {
            m.rbln_config = config;
        }
    }

    let facts: BTreeMap<String, ModelFacts> = manifest
        .models
        .iter()
        .filter_map(|m| {
            let json = vae_json.get(&m.name)?;
            Some((
                m.name.clone(),
                ModelFacts {
                    uses_encoder: m.rbln_config.get("uses_encoder") == Some(&Value::Bool(true)),
                    in_channels: json.in_channels,
                    scaling: json.scaling.clone(),
                },
            ))
        })
        .collect();
    let mut resolved = Vec::new();
    for (i, p) in manifest.pipelines.iter().enumerate() {
        let anchor = loc.pipeline(&p.name);
        let model = p
            .model
            .clone()
            .unwrap_or_else(|| manifest.models[0].name.clone());
        let (mut inputs, mut outputs, mut steps) = match p.kind {
            Some(kind) => derive::default_graph(kind, &model),
            None => Default::default(),
        };
        let custom = p.steps.is_some();
        if let Some(s) = &p.steps {
            steps = s.clone();
        }
        if let Some(x) = &p.inputs {
            inputs = x.clone();
        }
        if let Some(x) = &p.outputs {
            outputs = x.clone();
        }
        let pipeline = graph::build(
            &p.name,
            p.kind,
            Some(&model),
            inputs,
            outputs,
            &steps,
            &facts,
        )
        .map_err(
            |GraphError {
                 step,
                 at: key,
                 message,
             }| {
                let message = format!("pipelines[{i}] \"{}\": {message}", p.name);
                if !custom && step.is_some() {
                    // A default step failed (e.g. the model lacks shift_factor): point at the kind.
                    return at(manifest, &loc, anchor, "kind", "", message);
                }
                let anchor = match &step {
                    Some(s) => loc.find(anchor, "name", s).map_or(anchor, |(l, _)| l),
                    None => anchor,
                };
                match key {
                    Some((k, v)) => at(manifest, &loc, anchor, &k, &v, message),
                    None => at(manifest, &loc, anchor, "name", "", message),
                }
            },
        )?;
        resolved.push(pipeline);
    }
    manifest.resolved = resolved;
    Ok(())
}

#[cfg(test)]
#[path = "pipelines_tests.rs"]
mod tests;
