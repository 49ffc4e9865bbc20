//! Serving manifests: which plugins to load, which devices exist and which models to serve.
//!
//! ```yaml
//! plugins: [rbln_npu, rbln_vae]      # library names (searched in the plugin dirs) or paths
//! devices:
//!   - name: npu
//!     plugin: rbln-npu                # the device (and compiler) a loaded plugin provides
//!     ids: [0, 1]                     # two devices
//!     options: {cores: {0: [0], 1: "1-3"}}   # optional: default, all cores split evenly
//! models:
//!   - name: vae
//!     class: RBLNAutoencoderKL
//!     model_id: ../models/default     # relative to this file; or a Hub id, org/name
//!     subfolder: vae                  # default: vae when the directory holds model_index.json
//!     revision: main                  # a Hub id's branch, tag or commit
//!     variant: fp16                   # diffusion_pytorch_model.fp16.safetensors
//!     export: auto                    # true | false | auto
//!     device: npu
//!     rbln_config: {batch_size: 4, uses_encoder: true, device_map: {encoder: 0, decoder: 1}}
//!     serving: {instances: 1, max_queue_delay_us: 2000, max_queue_size: 64, timeout_us: 1000000}
//! ```
//!
//! Unknown fields are errors. Every error names the file, the line and column, and the field.

pub mod pipelines;

use plugin_api::Export;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

/// A manifest error: `file:line:column: field: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// 1-based line (0 when unknown, e.g. the file cannot be read).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, starting with the field's path (e.g. `models[0].device`).
    pub message: String,
}

/// A parsed, checked manifest with paths resolved against its directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Plugin libraries: a bare name (`rbln_npu`) is searched in the plugin directories, a path
    /// (with `/` or a library extension) is relative to the manifest. Empty: every plugin found.
    #[serde(default)]
    pub plugins: Vec<String>,
    /// Named devices models run on.
    #[serde(default)]
    pub devices: Vec<DeviceEntry>,
    /// The models to serve.
    pub models: Vec<ModelEntry>,
    /// Pipelines over the models (see [`crate::pipeline`]).
    #[serde(default)]
    pub pipelines: Vec<crate::pipeline::spec::PipelineEntry>,
    /// The pipelines resolved into step graphs (set after parsing).
    #[serde(skip)]
    pub resolved: Vec<crate::pipeline::graph::Pipeline>,
    /// The manifest file (set after parsing).
    #[serde(skip)]
    pub file: PathBuf,
    /// The manifest's text (kept to point at pipelines' lines when they are resolved).
    #[serde(skip)]
    text: String,
}

/// A device: which plugin device runs the models that name it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// The name models refer to.
    pub name: String,
    /// The device (and compiler) name a loaded plugin provides, e.g. `rbln-npu`.
    pub plugin: String,
    /// Device indices: the plugin's device set is configured with them (see
    /// [`Manifest::device_configs`]), and they are passed to the model as `rbln_config.device`
    /// unless it sets one (`device_map` still wins for the parts it names).
    #[serde(default)]
    pub ids: Vec<u64>,
    /// Runtime options.
    #[serde(default)]
    pub options: DeviceOptions,
}

/// Device runtime options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceOptions {
    /// The CPU cores of each id (an rbln-npu device is a set of cores with its own thread pool):
    /// a map id -> core list (`[0, 1]`) or range string (`"0-7"`), or one such set when the
    /// entry has one id. Default: the cores are split evenly among all the plugin's ids.
    #[serde(default, deserialize_with = "cores_value")]
    pub cores: Option<Value>,
    /// Removed (all models shared one process-wide pool of this size): refused with a message
    /// pointing at `cores`.
    #[serde(default)]
    pub threads: Option<serde_yaml::Value>,
}

/// Reads `cores` as JSON (integer map keys, which YAML allows, become strings).
fn cores_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    fn convert(v: serde_yaml::Value) -> Result<Value, String> {
        Ok(match v {
            serde_yaml::Value::Mapping(m) => {
                let mut out = Map::new();
                for (k, v) in m {
                    let key = match k {
                        serde_yaml::Value::Number(n) => n.to_string(),
                        serde_yaml::Value::String(s) => s,
                        other => return Err(format!("cores: key {other:?} is not a device id")),
                    };
                    out.insert(key, convert(v)?);
                }
                Value::Object(out)
            }
            serde_yaml::Value::Sequence(items) => {
                Value::Array(items.into_iter().map(convert).collect::<Result<_, _>>()?)
            }
            other => serde_json::to_value(other).map_err(|e| format!("cores: {e}"))?,
        })
    }
    let v = Option::<serde_yaml::Value>::deserialize(d)?;
    v.map(convert).transpose().map_err(de::Error::custom)
}

/// A model to serve.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The served name; its methods are served as `<name>.<method>`.
    pub name: String,
    /// The plugin that must provide `class` (its name as `mlhost plugins` lists it).
    pub plugin: Option<String>,
    /// The model class (default: the only one loaded).
    pub class: Option<String>,
    /// The model directory, relative to the manifest; or, when no such path exists, a Hugging
    /// Face Hub id `org/name` (kept as written, [`ModelEntry::hub_id`]).
    pub model_id: PathBuf,
    /// Compile (`true`), load compiled (`false`) or decide by the directory (`auto`).
    #[serde(default)]
    pub export: ExportMode,
    /// A device name from `devices` (default: the default device and compiler).
    pub device: Option<String>,
    /// rbln_config fields, e.g. `{batch_size: 4, uses_encoder: true}`.
    #[serde(default)]
    pub rbln_config: Map<String, Value>,
    /// Scheduling and queueing.
    #[serde(default)]
    pub serving: ServingOptions,
    /// A subfolder of the directory or Hub repository (default: `vae` when it holds
    /// `model_index.json`).
    pub subfolder: Option<String>,
    /// A Hub id's branch, tag or commit (default `main`).
    pub revision: Option<String>,
    /// The weights variant (`diffusion_pytorch_model.<variant>.safetensors`).
    pub variant: Option<String>,
    /// True when `model_id` names a Hub repository (no such path exists); the models layer
    /// resolves it to a snapshot directory of the Hugging Face cache.
    #[serde(skip)]
    pub hub_id: bool,
}

/// `export`: `true`, `false` or `auto`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportMode(pub Option<bool>);

impl ExportMode {
    /// The plugin's [`Export`].
    pub fn export(self) -> Export {
        match self.0 {
            Some(true) => Export::Yes,
            Some(false) => Export::No,
            None => Export::Auto,
        }
    }
}

impl<'de> Deserialize<'de> for ExportMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ExportMode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or \"auto\"")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ExportMode, E> {
                Ok(ExportMode(Some(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExportMode, E> {
                match v {
                    "auto" => Ok(ExportMode(None)),
                    "true" => Ok(ExportMode(Some(true))),
                    "false" => Ok(ExportMode(Some(false))),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Serving options of one model (each of its methods gets its own queue).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingOptions {
    /// Worker threads per method, each running one batch at a time.
    #[serde(default = "one")]
    pub instances: NonZeroUsize,
    /// How long the first queued request waits for others to fill the batch.
    #[serde(default = "default_delay")]
    pub max_queue_delay_us: u64,
    /// Requests queued per method before new ones are refused with 503.
    #[serde(default = "default_queue")]
    pub max_queue_size: NonZeroUsize,
    /// Default per-request queue timeout (a request's `parameters.timeout` wins); none: wait.
    pub timeout_us: Option<u64>,
    /// Largest request body accepted for this model's methods (413 above it).
    #[serde(default = "default_request_bytes")]
    pub max_request_bytes: u64,
}

/// The bounds of each serving option: (field, least, most, unit). Values outside them cannot
/// work (a delay of 10^18 us never ends; a queue of 10^9 requests cannot be held).
pub const SERVING_LIMITS: [(&str, u64, u64, &str); 5] = [
    ("instances", 1, 64, "worker threads"),
    ("max_queue_delay_us", 0, 10_000_000, "us (10 s)"),
    ("max_queue_size", 1, 65_536, "requests"),
    ("timeout_us", 1, 3_600_000_000, "us (1 hour)"),
    ("max_request_bytes", 1024, 4 << 30, "bytes (4 GiB)"),
];

/// Longest model or pipeline name: it becomes a URL path segment.
pub const MAX_NAME_LEN: usize = 128;

impl ServingOptions {
    /// Each option with its value, in [`SERVING_LIMITS`] order.
    fn values(&self) -> [Option<u64>; 5] {
        [
            Some(self.instances.get() as u64),
            Some(self.max_queue_delay_us),
            Some(self.max_queue_size.get() as u64),
            self.timeout_us,
            Some(self.max_request_bytes),
        ]
    }

    /// The first option outside its bounds, as `(field, message)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for ((field, least, most, unit), value) in SERVING_LIMITS.iter().zip(self.values()) {
            if let Some(v) = value.filter(|v| !(*least..=*most).contains(v)) {
                return Err((
                    field,
                    format!("{field} is {v}; it must be between {least} and {most} {unit}"),
                ));
            }
        }
        Ok(())
    }
}

/// Whether `name` can name a served model or pipeline: 1 to [`MAX_NAME_LEN`] letters, digits, `-`
/// and `_` (it becomes `/v2/models/{name}`, and `{name}.{method}` for a model).
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Some(format!(
            "a name must have 1 to {MAX_NAME_LEN} characters, this one has {}",
            name.len()
        ));
    }
    let bad = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))?;
    Some(format!(
        "{bad:?} is not allowed (use letters, digits, '-' and '_')"
    ))
}

fn one() -> NonZeroUsize {
    NonZeroUsize::MIN
}
fn default_delay() -> u64 {
    1000
}
fn default_queue() -> NonZeroUsize {
    NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN)
}
fn default_request_bytes() -> u64 {
    256 << 20
}

impl Default for ServingOptions {
    fn default() -> Self {
        ServingOptions {
            instances: one(),
            max_queue_delay_us: default_delay(),
            max_queue_size: default_queue(),
            timeout_us: None,
            max_request_bytes: default_request_bytes(),
        }
    }
}

impl Manifest {
    /// A resolved pipeline by name.
    pub fn pipeline(&self, name: &str) -> Option<&crate::pipeline::graph::Pipeline> {
        self.resolved.iter().find(|p| p.name == name)
    }

    /// Reads, parses and checks a manifest file (pipelines not yet resolved).
    pub fn load(file: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(file).map_err(|e| ManifestError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the manifest: {e}"),
        })?;
        Manifest::parse(&text, file)
    }

    /// Parses and checks manifest `text` read from `file` (paths resolve against its directory).
    /// Its pipelines are resolved later, once the plugins that describe its models are loaded
    /// ([`Manifest::resolve_pipelines`]).
    pub fn parse(text: &str, file: &Path) -> Result<Manifest, ManifestError> {
        let mut m: Manifest = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let mut message = e.to_string();
            if let Some(at) = message.rfind(" at line ") {
                message.truncate(at);
            }
            ManifestError {
                file: file.to_path_buf(),
                line,
                column,
                message,
            }
        })?;
        m.file = file.to_path_buf();
        m.check(text)?;
        let base = file.parent().unwrap_or(Path::new("")).to_path_buf();
        for model in &mut m.models {
            model.hub_id = !base.join(&model.model_id).exists();
            if !model.hub_id {
                model.model_id = base.join(&model.model_id);
            }
        }
        m.text = text.to_string();
        Ok(m)
    }

    /// The directory relative paths resolve against.
    pub fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new(""))
    }

    /// The device entry named `name`.
    pub fn device(&self, name: &str) -> Option<&DeviceEntry> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// The options each device plugin is configured with (`Device::configure`), by plugin
    /// device name: `{"ids": [...], "cores": {"id": spec}}` gathered from every entry naming
    /// that plugin. A plugin whose entries give no ids is not configured (it keeps its
    /// default, for rbln-npu one device of all cores).
    pub fn device_configs(&self) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Vec<u64>, Map<String, Value>)> = Vec::new();
        for d in self.devices.iter().filter(|d| !d.ids.is_empty()) {
            let i = match out.iter().position(|(p, _, _)| *p == d.plugin) {
                Some(i) => i,
                None => {
                    out.push((d.plugin.clone(), Vec::new(), Map::new()));
                    out.len() - 1
                }
            };
            let (_, ids, cores) = &mut out[i];
            ids.extend(&d.ids);
            match &d.options.cores {
                Some(Value::Object(m)) => cores.extend(m.clone()),
                Some(one) => {
                    cores.insert(d.ids[0].to_string(), one.clone());
                }
                None => {}
            }
        }
        out.into_iter()
            .map(|(plugin, ids, cores)| {
                let mut v = serde_json::json!({ "ids": ids });
                if !cores.is_empty() {
                    v["cores"] = Value::Object(cores);
                }
                (plugin, v)
            })
            .collect()
    }

    fn check(&self, text: &str) -> Result<(), ManifestError> {
        let err = |key: &str, value: &str, message: String| {
            let (line, column) = locate(text, key, value);
            ManifestError {
                file: self.file.clone(),
                line,
                column,
                message,
            }
        };
        let mut names = BTreeSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            if !names.insert(d.name.as_str()) {
                return Err(err(
                    "name",
                    &d.name,
                    format!("devices[{i}].name: device \"{}\" is defined twice", d.name),
                ));
            }
        }
        let mut ids: Vec<(&str, u64, usize)> = Vec::new();
        for (i, d) in self.devices.iter().enumerate() {
            if d.options.threads.is_some() {
                return Err(err(
                    "threads",
                    "",
                    format!(
                        "devices[{i}].options.threads: no longer supported: a device is a set of \
                         CPU cores with its own thread pool; give its cores instead, e.g. \
                         `cores: \"0-1\"` for the first two (or `cores: {{0: [0], 1: [1]}}` for \
                         two devices)"
                    ),
                ));
            }
            for &id in &d.ids {
                if let Some((_, _, first)) = ids
                    .iter()
                    .find(|(p, other, _)| *p == d.plugin && *other == id)
                {
                    return Err(err(
                        "ids",
                        "",
                        format!(
                            "devices[{i}].ids: {} device {id} is already in devices[{first}]",
                            d.plugin
                        ),
                    ));
                }
                ids.push((&d.plugin, id, i));
            }
            match &d.options.cores {
                Some(_) if d.ids.is_empty() => {
                    return Err(err(
                        "cores",
                        "",
                        format!(
                            "devices[{i}].options.cores: give the device ids the cores are for \
                             (`ids: [0]`)"
                        ),
                    ))
                }
                Some(Value::Object(m)) => {
                    if let Some(k) = m
                        .keys()
                        .find(|k| !d.ids.iter().any(|id| id.to_string() == **k))
                    {
                        return Err(err(
                            "cores",
                            "",
                            format!(
                                "devices[{i}].options.cores: device {k} is not among this \
                                 entry's ids ({:?})",
                                d.ids
                            ),
                        ));
                    }
                }
                Some(_) if d.ids.len() > 1 => {
                    return Err(err(
                        "cores",
                        "",
                        format!(
                            "devices[{i}].options.cores: one core set for {} ids; map each id \
                             to its cores, e.g. `cores: {{{}: [0], {}: [1]}}`",
                            d.ids.len(),
                            d.ids[0],
                            d.ids[1]
                        ),
                    ))
                }
                _ => {}
            }
        }
        if self.models.is_empty() {
            return Err(err("models", "", "models: the list is empty".into()));
        }
        let mut names = BTreeSet::new();
        for (i, m) in self.models.iter().enumerate() {
            if let Some(problem) = name_problem(&m.name) {
                let shown: String = m.name.chars().take(40).collect();
                return Err(err(
                    "name",
                    &m.name,
                    format!("models[{i}].name: \"{shown}\" is not a valid model name: {problem}"),
                ));
            }
            if !names.insert(m.name.as_str()) {
                let (line, column) = locate_nth(text, "name", &m.name, 1);
                return Err(ManifestError {
                    file: self.file.clone(),
                    line,
                    column,
                    message: format!("models[{i}].name: model \"{}\" is defined twice", m.name),
                });
            }
            if let Err((field, message)) = m.serving.check() {
                return Err(err(field, "", format!("models[{i}].serving.{message}")));
            }
            if let Some(dev) = &m.device {
                if self.device(dev).is_none() {
                    let known: Vec<&str> = self.devices.iter().map(|d| d.name.as_str()).collect();
                    return Err(err(
                        "device",
                        dev,
                        format!(
                            "models[{i}].device: no device named \"{dev}\" in devices (defined: \
                             {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
            }
            let dir = self.dir().join(&m.model_id);
            let raw = m.model_id.display().to_string();
            if dir.exists() && !dir.is_dir() {
                return Err(err(
                    "model_id",
                    &raw,
                    format!("models[{i}].model_id: {} is not a directory", dir.display()),
                ));
            }
            if !dir.exists() {
                if let Err(e) = crate::hub::RepoId::parse(&raw) {
                    return Err(err(
                        "model_id",
                        &raw,
                        format!(
                            "models[{i}].model_id: {} is not a directory, and {e}",
                            dir.display()
                        ),
                    ));
                }
            }
            use crate::hub::names::{check_repo_path, check_revision, check_variant};
            let fields = [
                (
                    "subfolder",
                    &m.subfolder,
                    check_repo_path as fn(&str, &str) -> _,
                ),
                ("revision", &m.revision, |v, _| check_revision(v)),
                ("variant", &m.variant, |v, _| check_variant(v)),
            ];
            for (field, value, check) in fields {
                if let Some(v) = value {
                    if let Err(e) = check(v, field) {
                        return Err(err(field, v, format!("models[{i}].{field}: {e}")));
                    }
                }
            }
            if let (Some(r), true) = (&m.revision, dir.is_dir()) {
                return Err(err(
                    "revision",
                    r,
                    format!(
                        "models[{i}].revision: \"{r}\" applies to a Hugging Face Hub id, and \
                         model_id {} is a local directory",
                        dir.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The 1-based line and column of the value of the first `key: value` line in `text` (any
/// value when `value` is empty); (1, 1) when not found.
fn locate(text: &str, key: &str, value: &str) -> (usize, usize) {
    locate_nth(text, key, value, 0)
}

/// Like [`locate`], for the `skip + 1`-th such line (the first when there are fewer). The key
/// may also sit inside a flow mapping (`serving: {instances: 0}`).
fn locate_nth(text: &str, key: &str, value: &str, skip: usize) -> (usize, usize) {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let starts = line.match_indices(key).map(|(i, _)| i).filter(|&i| {
            let before = line[..i].trim_end_matches([' ', '-']);
            let boundary = before.is_empty() || before.ends_with(['{', ',']);
            boundary && line[i + key.len()..].starts_with(':')
        });
        for at in starts {
            let rest = &line[at + key.len() + 1..];
            let v = rest.trim_start();
            let v = v
                .split([',', '}', '#'])
                .next()
                .unwrap_or(v)
                .trim()
                .trim_matches(|c| c == '"' || c == '\'');
            if value.is_empty() || v == value {
                let col = line.len() - rest.trim_start().len() + 1;
                found.push((n + 1, col));
            }
        }
        if found.len() > skip {
            break;
        }
    }
    found.get(skip).or(found.first()).copied().unwrap_or((1, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in(text: &str) -> (tempfile::TempDir, Result<Manifest, ManifestError>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("vae")).unwrap();
        let m = Manifest::parse(text, &dir.path().join("m.yaml"));
        (dir, m)
    }

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        parse_in(text).1
    }

    fn error(text: &str) -> ManifestError {
        let e = parse(text).unwrap_err();
        assert!(e.to_string().contains("m.yaml:"), "{e}");
        e
    }

    const GOOD: &str = "devices:\n  - name: npu0\n    plugin: rbln-npu\n    ids: [0]\n    \
                        options: {cores: \"0-1\"}\nmodels:\n  - name: vae\n    model_id: vae\n    \
                        export: auto\n    device: npu0\n    rbln_config: {batch_size: 4}\n    \
                        serving: {instances: 2, max_queue_size: 8}\n";

    #[test]
    fn a_good_manifest_parses_with_defaults() {
        let (_dir, m) = parse_in(GOOD);
        let m = m.unwrap();
        assert_eq!(m.models[0].export.export(), Export::Auto);
        assert!(m.models[0].model_id.ends_with("vae"));
        assert!(m.models[0].model_id.is_dir());
        assert_eq!(m.models[0].serving.instances.get(), 2);
        assert_eq!(m.models[0].serving.max_queue_delay_us, 1000);
        assert_eq!(m.models[0].rbln_config["batch_size"], 4);
        assert_eq!(
            m.device_configs(),
            [(
                "rbln-npu".to_string(),
                serde_json::json!({"ids": [0], "cores": {"0": "0-1"}})
            )]
        );
    }

    #[test]
    fn device_entries_gather_into_one_config_per_plugin() {
        let m = parse(
            "devices:\n  - name: a\n    plugin: rbln-npu\n    ids: [0, 1]\n    options:\n      \
             cores: {0: [0], 1: \"1-2\"}\n  - name: b\n    plugin: rbln-npu\n    ids: [2]\n    \
             options: {cores: [3]}\n  - name: c\n    plugin: other\nmodels:\n  - name: vae\n    \
             model_id: vae\n",
        )
        .unwrap();
        assert_eq!(
            m.device_configs(),
            [(
                "rbln-npu".to_string(),
                serde_json::json!({"ids": [0, 1, 2], "cores": {"0": [0], "1": "1-2", "2": [3]}})
            )]
        );
    }

    #[test]
    fn bad_device_options_name_the_entry_and_field() {
        let dev = |opts: &str| {
            error(&format!(
                "devices:\n  - name: a\n    plugin: rbln-npu\n{opts}models:\n  - name: vae\n    \
                 model_id: vae\n"
            ))
            .message
        };
        let e = dev("    ids: [0]\n    options: {threads: 2}\n");
        assert!(
            e.contains("devices[0].options.threads: no longer supported"),
            "{e}"
        );
        assert!(e.contains("cores: \"0-1\""), "{e}");
        let e = dev("    options: {cores: [0]}\n");
        assert!(
            e.contains("devices[0].options.cores: give the device ids"),
            "{e}"
        );
        let e = dev("    ids: [0, 1]\n    options: {cores: [0]}\n");
        assert!(e.contains("one core set for 2 ids"), "{e}");
        let e = dev("    ids: [0]\n    options: {cores: {1: [0]}}\n");
        assert!(e.contains("device 1 is not among this entry's ids"), "{e}");
        let e = dev("    ids: [0]\n  - name: b\n    plugin: rbln-npu\n    ids: [0]\n");
        assert!(
            e.contains("devices[1].ids: rbln-npu device 0 is already in devices[0]"),
            "{e}"
        );
    }

    #[test]
    fn unknown_field_names_the_field_and_its_place() {
        let e = error("models:\n  - name: vae\n    model_id: vae\n    batchsize: 4\n");
        assert_eq!((e.line, e.column), (4, 5), "{e}");
        assert!(e.message.contains("unknown field `batchsize`"), "{e}");
        assert!(e.message.contains("models[0]"), "{e}");
    }

    #[test]
    fn wrong_types_and_values_name_the_field() {
        let e = error("models:\n  - name: vae\n    model_id: vae\n    export: maybe\n");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("models[0].export"), "{e}");
        let e =
            error("models:\n  - name: vae\n    model_id: vae\n    serving:\n      instances: 0\n");
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("instances"), "{e}");
        let e = error("models:\n  - name: vae\n    model_id: vae\n    rbln_config: 3\n");
        assert!(e.message.contains("rbln_config"), "{e}");
    }

    #[test]
    fn missing_required_field_is_an_error() {
        let e = error("models:\n  - name: vae\n");
        assert!(e.message.contains("missing field `model_id`"), "{e}");
        let e = error("devices: []\n");
        assert!(e.message.contains("missing field `models`"), "{e}");
    }

    #[test]
    fn unknown_device_reference_points_at_it() {
        let e = error("models:\n  - name: vae\n    model_id: vae\n    device: npu9\n");
        assert_eq!((e.line, e.column), (4, 13), "{e}");
        assert!(e.message.contains("models[0].device"), "{e}");
        assert!(e.message.contains("npu9"), "{e}");
    }

    #[test]
    fn hub_ids_are_kept_as_written() {
        let (_dir, m) = parse_in(
            "models:\n  - name: vae\n    model_id: org/sd-vae\n    subfolder: vae\n    \
             revision: v1.0\n    variant: fp16\n  - name: local\n    model_id: vae\n",
        );
        let m = m.unwrap();
        let (hub, local) = (&m.models[0], &m.models[1]);
        assert!(hub.hub_id && !local.hub_id);
        assert_eq!(hub.model_id, PathBuf::from("org/sd-vae"));
        assert_eq!(hub.subfolder.as_deref(), Some("vae"));
        assert_eq!(hub.revision.as_deref(), Some("v1.0"));
        assert_eq!(hub.variant.as_deref(), Some("fp16"));
        assert!(local.model_id.is_dir());
        let e = error("models:\n  - name: vae\n    model_id: org/x\n    subfolder: ../up\n");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("models[0].subfolder"), "{e}");
    }

    #[test]
    fn missing_model_dir_and_duplicate_names_are_errors() {
        let e = error("models:\n  - name: vae\n    model_id: nowhere\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("models[0].model_id"), "{e}");
        let e = error("models:\n  - name: a\n    model_id: vae\n  - name: a\n    model_id: vae\n");
        assert!(e.message.contains("defined twice"), "{e}");
        let e = error("models:\n  - name: a.b\n    model_id: vae\n");
        assert!(e.message.contains("models[0].name"), "{e}");
    }

    #[test]
    fn syntax_errors_and_unreadable_files_name_the_file() {
        let e = error("models: [\n");
        assert!(e.line >= 1, "{e}");
        let e = Manifest::load(Path::new("/nonexistent/m.yaml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/m.yaml"), "{e}");
    }
}
