//! `RBLNAutoencoderKL`: compile (or load) the VAE's graphs, save them, run encode / decode.

use crate::config::{AutoencoderKLConfig, CONFIG_FILE};
use crate::distribution::LatentDistribution;
use crate::graph::{build_decoder, build_encoder, DECODER, ENCODER};
use crate::model::AutoencoderKL;
use crate::placement::{Placement, Replicas};
use crate::rbln_config::{merge_user_config, RBLNAutoencoderKLConfig, CLS_NAME, RBLN_CONFIG_FILE};
use crate::save::{write_dir_atomically, Overwrite, Target};
use crate::weights::weights_file;
use plugin_api::abi_stable::std_types::{RStr, RVec};
use plugin_api::tensor::shape_str;
use plugin_api::{
    Backend, DeviceBox, Export, NamedTensor, PluginError, ProgressBox, Tensor, TensorSpec,
};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// One compiled graph: its artifact and, when runtimes are created, the loaded executable.
pub(crate) struct Part {
    /// `encoder` or `decoder`.
    pub name: &'static str,
    /// The input and output at the first `sample_size`.
    pub input: TensorSpec,
    pub output: TensorSpec,
    /// The devices it runs on, its timeout and profiling.
    placement: Placement,
    /// The input of every compiled shape (see `RBLNAutoencoderKLConfig::compiled_sizes`).
    pub shapes: Vec<TensorSpec>,
    artifact: Artifact,
    runtime: Runtime,
}

/// Whether and when a part's executable exists.
enum Runtime {
    /// `create_runtimes=false`.
    None,
    /// Loaded when the model was.
    Loaded(Replicas),
    /// Validated when the model was loaded (the device loaded it, checking version, checksum
    /// and signature, and dropped it), created again on first use. The encoder is kept this
    /// way: text-to-image serving never encodes, and its weights would otherwise stay in memory.
    OnFirstUse {
        exe: OnceLock<Replicas>,
        init: Mutex<()>,
    },
}

/// Where a part's artifact bytes are, for `save_pretrained`.
enum Artifact {
    /// Compiled in this process.
    InMemory(Vec<u8>),
    /// Loaded from a compiled directory: the bytes are not kept (the runtime holds its own
    /// copy of the weights, and a second one would double the memory of a loaded model);
    /// `save_pretrained` reads the file again and checks it is still the same.
    OnDisk {
        path: std::path::PathBuf,
        len: usize,
        crc32: u32,
    },
}

impl Artifact {
    fn bytes(&self) -> Result<Cow<'_, [u8]>, PluginError> {
        match self {
            Artifact::InMemory(b) => Ok(Cow::Borrowed(b)),
            Artifact::OnDisk { path, len, crc32 } => {
                let b = std::fs::read(path).map_err(|e| {
                    PluginError::invalid(format!(
                        "cannot read {} again to save it: {e}",
                        path.display()
                    ))
                })?;
                if b.len() != *len || crc32fast::hash(&b) != *crc32 {
                    return Err(PluginError::invalid(format!(
                        "{} changed on disk since the model was loaded from it; load the model \
                         again (or recompile) before saving",
                        path.display()
                    )));
                }
                Ok(Cow::Owned(b))
            }
        }
    }
}

/// A compiled diffusers `AutoencoderKL`: `encode` (when compiled with `uses_encoder`) and
/// `decode` run on the backend's device.
pub struct RBLNAutoencoderKL {
    rbln_config: RBLNAutoencoderKLConfig,
    vae_config: AutoencoderKLConfig,
    pub(crate) encoder: Option<Part>,
    pub(crate) decoder: Part,
    extension: String,
    /// Creates the runtimes that are made on first use.
    device: DeviceBox,
    /// The directory the model was read from (`from_pretrained`), which saving never writes.
    source: Option<std::path::PathBuf>,
    /// Names the model in profiles and timeout messages (its directory's name).
    name: String,
}

fn report(progress: &ProgressBox, stage: &str, done: u64, total: u64) {
    progress.report(RStr::from(stage), done, total);
}

/// The output shape of part `name` for input shape `x` (`[B, C, h, w]`), or `None` if that
/// overflows.
fn output_shape(
    rc: &RBLNAutoencoderKLConfig,
    vae: &AutoencoderKLConfig,
    name: &str,
    x: &[usize],
) -> Option<Vec<usize>> {
    let vsf = rc.vae_scale_factor;
    if name == ENCODER.0 {
        Some(vec![x[0], 2 * rc.latent_channels, x[2] / vsf, x[3] / vsf])
    } else {
        Some(vec![
            x[0],
            vae.out_channels,
            x[2].checked_mul(vsf)?,
            x[3].checked_mul(vsf)?,
        ])
    }
}

/// The input and output signatures of part `name` at image size `hw`.
fn specs(
    rc: &RBLNAutoencoderKLConfig,
    vae: &AutoencoderKLConfig,
    name: &str,
    hw: (usize, usize),
) -> (TensorSpec, TensorSpec) {
    let x = rc.part_shape(name, hw);
    let y = output_shape(rc, vae, name, &x).expect("validated sizes");
    let names = if name == ENCODER.0 { ENCODER } else { DECODER };
    (TensorSpec::f32(names.1, &x), TensorSpec::f32(names.2, &y))
}

/// What a part's executable must hold: the input and output of its first plan and the inputs
/// of every plan.
struct Expected {
    first: (TensorSpec, TensorSpec),
    shapes: Vec<TensorSpec>,
}

fn expected(rc: &RBLNAutoencoderKLConfig, vae: &AutoencoderKLConfig, name: &str) -> Expected {
    let sizes = rc.compiled_sizes();
    Expected {
        first: specs(rc, vae, name, reference_size(&sizes)),
        shapes: sizes.iter().map(|&hw| specs(rc, vae, name, hw).0).collect(),
    }
}

/// The size a part's graph is built and packed for: the largest (then the first listed);
/// every other size is planned from it.
fn reference_size(sizes: &[(usize, usize)]) -> (usize, usize) {
    let mut best = sizes[0];
    for &s in sizes {
        if s.0 * s.1 > best.0 * best.1 {
            best = s;
        }
    }
    best
}

/// Loads `artifact` on `device` where `placement` says and checks its signature against the
/// expected shapes `want`.
fn load_exe(
    device: &DeviceBox,
    placement: &Placement,
    name: &str,
    artifact: &[u8],
    want: &Expected,
) -> Result<Replicas, PluginError> {
    let (input, output) = &want.first;
    let replicas = placement
        .load(device, artifact)
        .map_err(|e| e.context(format!("loading the {name} executable")))?;
    let exe = replicas.first();
    let (ins, outs) = (exe.inputs().into_vec(), exe.outputs().into_vec());
    let fmt = |v: &[TensorSpec]| {
        v.iter()
            .map(|s| format!("{} {}", s.name, shape_str(&s.shape())))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut have: Vec<TensorSpec> = exe.shapes().into_iter().flat_map(RVec::into_vec).collect();
    let mut shapes = want.shapes.clone();
    let key = |s: &TensorSpec| s.shape.to_vec();
    have.sort_by_key(key);
    shapes.sort_by_key(key);
    if have != shapes {
        return Err(PluginError::invalid(format!(
            "the {name} executable is compiled for inputs ({}) but {RBLN_CONFIG_FILE} implies \
             ({}); recompile the model",
            fmt(&have),
            fmt(&shapes)
        )));
    }
    if ins != [input.clone()] || outs != [output.clone()] {
        return Err(PluginError::invalid(format!(
            "the {name} executable has inputs ({}) and outputs ({}) but {RBLN_CONFIG_FILE} \
             implies inputs ({}) and outputs ({})",
            fmt(&ins),
            fmt(&outs),
            fmt(std::slice::from_ref(input)),
            fmt(std::slice::from_ref(output))
        )));
    }
    Ok(replicas)
}

/// When a part's runtime is created.
#[derive(Clone, Copy, PartialEq, Eq)]
enum When {
    Never,
    Now,
    OnFirstUse,
}

/// A part's compiled bytes: from the compiler, or a compiled file mapped read-only.
enum Compiled {
    Bytes(Vec<u8>),
    File(std::path::PathBuf, memmap2::Mmap),
}

/// Maps `path` read-only, its pages populated from the page cache up front. Mapping instead of
/// reading spares a copy of the whole artifact into fresh memory (most of the load time of a
/// large model); the mapping lives only while the part is loaded.
fn map(path: &Path) -> Result<memmap2::Mmap, PluginError> {
    let file = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            PluginError::not_found(format!(
                "{} does not exist (is {} a compiled RBLNAutoencoderKL directory?)",
                path.display(),
                path.parent()
                    .map_or("?".into(), |d| d.display().to_string())
            ))
        } else {
            PluginError::invalid(format!("cannot read {}: {e}", path.display()))
        }
    })?;
    // SAFETY: the map is read-only and private to this load. If another process truncates the
    // file meanwhile, reads could fault; compiled directories are written atomically (a new
    // directory renamed into place), so a model being loaded is not rewritten in place.
    unsafe { memmap2::MmapOptions::new().populate().map(&file) }
        .map_err(|e| PluginError::invalid(format!("cannot map {}: {e}", path.display())))
}

fn load_part(
    device: &DeviceBox,
    (when, placement): (When, Placement),
    name: &'static str,
    compiled: Compiled,
    (input, output): (TensorSpec, TensorSpec),
    want: Expected,
) -> Result<Part, PluginError> {
    let artifact: &[u8] = match &compiled {
        Compiled::Bytes(b) => b,
        Compiled::File(_, m) => m,
    };
    let load = || load_exe(device, &placement, name, artifact, &want);
    let runtime = match when {
        When::Never => Runtime::None,
        When::Now => Runtime::Loaded(load()?),
        When::OnFirstUse => {
            drop(load()?);
            Runtime::OnFirstUse {
                exe: OnceLock::new(),
                init: Mutex::new(()),
            }
        }
    };
    let artifact = match compiled {
        Compiled::File(path, m) => Artifact::OnDisk {
            path,
            len: m.len(),
            crc32: crc32fast::hash(&m),
        },
        Compiled::Bytes(b) => Artifact::InMemory(b),
    };
    Ok(Part {
        name,
        input,
        output,
        placement,
        shapes: want.shapes,
        artifact,
        runtime,
    })
}

/// The names of the files in `dir` ending in `.{ext}`, sorted.
fn compiled_artifacts(dir: &Path, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(&format!(".{ext}")))
        .collect();
    names.sort();
    names
}

/// When and where part `name` of model `model` (a name for labels) is loaded, its device
/// indices checked against `device`.
fn plan(
    rc: &RBLNAutoencoderKLConfig,
    name: &str,
    model: &str,
    device: &DeviceBox,
) -> Result<(When, Placement), PluginError> {
    let placement = Placement::of(&rc.runtime, name, model);
    placement.check(&rc.runtime, name, device)?;
    Ok((when(rc.runtime.create_runtimes, name), placement))
}

/// The name a model is known by in profiles and timeout messages: its directory's name.
fn model_name(dir: Option<&Path>) -> String {
    dir.and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| CLS_NAME.trim_end_matches("Config").to_string())
}

/// Takes `from_pretrained`'s `variant` keyword (diffusers' `variant`: the weights file
/// `diffusion_pytorch_model.<variant>.safetensors`) out of the user's map: it is not an
/// `rbln_config` field and is never written to `rbln_config.json`.
fn take_variant(user: &mut Map<String, Value>) -> Result<Option<String>, PluginError> {
    match user.remove("variant") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) => Ok(Some(v)),
        Some(other) => Err(PluginError::invalid(format!(
            "variant must be a string such as \"fp16\", got {other}"
        ))),
    }
}

/// The runtime `when` for part `name` with `create_runtimes`.
fn when(create_runtimes: bool, name: &str) -> When {
    match (create_runtimes, name == ENCODER.0) {
        (false, _) => When::Never,
        (true, true) => When::OnFirstUse,
        (true, false) => When::Now,
    }
}

impl RBLNAutoencoderKL {
    /// Compiles (`export`: `Yes`, or `Auto` on a diffusers directory) or loads (`No`, or `Auto`
    /// on a compiled directory) the model in `model_id`, a local directory. Keys of
    /// `rbln_kwargs` win over `rbln_config`.
    pub fn from_pretrained(
        model_id: impl AsRef<Path>,
        export: Export,
        rbln_config: Value,
        rbln_kwargs: Value,
        backend: Backend,
        progress: &ProgressBox,
    ) -> Result<Self, PluginError> {
        let dir = model_id.as_ref();
        if !dir.is_dir() {
            return Err(PluginError::not_found(format!(
                "model directory {} does not exist (only local directories are supported)",
                dir.display()
            )));
        }
        let mut user = merge_user_config(&rbln_config, &rbln_kwargs)?;
        let variant = take_variant(&mut user)?;
        let weights = weights_file(variant.as_deref())?;
        let has = |name: &str| dir.join(name).exists();
        let export = match export {
            Export::Auto if Self::is_compiled_dir(dir) => Export::No,
            // Not a diffusers directory; loading it says what is wrong with its rbln_config.json.
            Export::Auto if has(RBLN_CONFIG_FILE) && !has(&weights) => Export::No,
            Export::Auto => Export::Yes,
            e => e,
        };
        if export == Export::No {
            if let Some(v) = &variant {
                return Err(PluginError::invalid(format!(
                    "variant \"{v}\" picks the weights file {weights} of a diffusers directory, \
                     but {} is loaded as a compiled model (its weights are compiled in)",
                    dir.display()
                )));
            }
            let mut vae = Self::load_compiled(dir, &user, backend, &model_name(Some(dir)))?;
            vae.source = Some(dir.to_path_buf());
            return Ok(vae);
        }
        let ext = backend.compiler.artifact_extension().into_string();
        let artifacts = compiled_artifacts(dir, &ext);
        if !has(&weights) && !has(RBLN_CONFIG_FILE) && !artifacts.is_empty() {
            return Err(PluginError::not_found(format!(
                "{} does not exist: {} holds compiled artifacts ({}) but no {RBLN_CONFIG_FILE}, \
                 so it cannot be loaded as a compiled model, and no {weights} to compile \
                 from (restore {RBLN_CONFIG_FILE}, or compile the diffusers model again)",
                dir.join(RBLN_CONFIG_FILE).display(),
                dir.display(),
                artifacts.join(", ")
            )));
        }
        report(progress, "load weights", 0, 1);
        let model = AutoencoderKL::from_dir_file(dir, &weights)?;
        report(progress, "load weights", 1, 1);
        let mut vae = Self::compile(model, &user, backend, progress, &model_name(Some(dir)))?;
        vae.source = Some(dir.to_path_buf());
        Ok(vae)
    }

    /// Compiles an in-memory model with `rbln_config` (a JSON object or `null`).
    pub fn from_model(
        model: AutoencoderKL,
        rbln_config: Value,
        backend: Backend,
        progress: &ProgressBox,
    ) -> Result<Self, PluginError> {
        let user = merge_user_config(&rbln_config, &Value::Null)?;
        Self::compile(model, &user, backend, progress, &model_name(None))
    }

    fn compile(
        model: AutoencoderKL,
        user: &Map<String, Value>,
        backend: Backend,
        progress: &ProgressBox,
        name: &str,
    ) -> Result<Self, PluginError> {
        let rc = RBLNAutoencoderKLConfig::for_export(user, &model.config)?;
        for p in rc.parts() {
            // Placement errors come before the (long) compile.
            plan(&rc, p.name, name, &backend.device)?;
        }
        let options = rc.compile_options_json();
        let sizes = rc.compiled_sizes();
        let (h, w) = reference_size(&sizes);
        let mut parts = Vec::new();
        for p in rc.parts() {
            // Errors name the fields that size the graph (e.g. a plan beyond the memory budget).
            let what = format!("compiling the {} for {}", p.name, rc.size_fields());
            let graph = if p.name == ENCODER.0 {
                build_encoder(&model, rc.batch_size, h, w)
            } else {
                build_decoder(&model, rc.batch_size, h, w)
            }
            .map_err(|e| e.context(&what))?;
            // The other sizes are planned from the packed weights of the largest.
            let extra: RVec<RVec<RVec<u64>>> = sizes
                .iter()
                .filter(|&&s| s != (h, w))
                .map(|&s| {
                    let shape = rc.part_shape(p.name, s).into_iter().map(|d| d as u64);
                    RVec::from(vec![shape.collect::<RVec<u64>>()])
                })
                .collect();
            let artifact = backend
                .compiler
                .compile_shapes(
                    graph.into_blob()?,
                    extra,
                    RStr::from(options.as_str()),
                    progress,
                )
                .into_result()
                .map_err(|e| e.context(&what))?
                .into_vec();
            let io = specs(&rc, &model.config, p.name, rc.sample_size);
            parts.push(load_part(
                &backend.device,
                plan(&rc, p.name, name, &backend.device)?,
                p.name,
                Compiled::Bytes(artifact),
                io,
                expected(&rc, &model.config, p.name),
            )?);
        }
        Self::assemble(rc, model.config, parts, backend, name)
    }

    fn assemble(
        rbln_config: RBLNAutoencoderKLConfig,
        vae_config: AutoencoderKLConfig,
        mut parts: Vec<Part>,
        backend: Backend,
        name: &str,
    ) -> Result<Self, PluginError> {
        let decoder = parts
            .pop()
            .filter(|p| p.name == DECODER.0)
            .ok_or_else(|| PluginError::internal("no decoder was compiled"))?;
        Ok(RBLNAutoencoderKL {
            encoder: parts.pop(),
            decoder,
            rbln_config,
            vae_config,
            extension: backend.compiler.artifact_extension().into_string(),
            device: backend.device,
            source: None,
            name: name.to_string(),
        })
    }

    fn load_compiled(
        dir: &Path,
        user: &Map<String, Value>,
        backend: Backend,
        name: &str,
    ) -> Result<Self, PluginError> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    PluginError::not_found(format!(
                        "{} does not exist (is {} a compiled RBLNAutoencoderKL directory?)",
                        p.display(),
                        dir.display()
                    ))
                } else {
                    PluginError::invalid(format!("cannot read {}: {e}", p.display()))
                }
            })
        };
        let stored: Value = serde_json::from_slice(&read(RBLN_CONFIG_FILE)?).map_err(|e| {
            PluginError::invalid(format!(
                "{}: not valid JSON: {e}",
                dir.join(RBLN_CONFIG_FILE).display()
            ))
        })?;
        let rc = RBLNAutoencoderKLConfig::for_load(&stored, user)
            .map_err(|e| e.context(dir.display()))?;
        let vae = AutoencoderKLConfig::from_dir(dir)?;
        for (field, stored_v, vae_v) in [
            ("in_channels", rc.in_channels, vae.in_channels),
            ("latent_channels", rc.latent_channels, vae.latent_channels),
            (
                "vae_scale_factor",
                rc.vae_scale_factor,
                vae.vae_scale_factor(),
            ),
        ] {
            if stored_v != vae_v {
                return Err(PluginError::invalid(format!(
                    "{}: {RBLN_CONFIG_FILE} has {field} = {stored_v} but {CONFIG_FILE} implies {vae_v}",
                    dir.display()
                )));
            }
        }
        let ext = backend.compiler.artifact_extension().into_string();
        let mut parts = Vec::new();
        for p in rc.parts() {
            let file = format!("{}.{ext}", p.name);
            let mapped = map(&dir.join(&file))?;
            let io = specs(&rc, &vae, p.name, rc.sample_size);
            let source = std::path::absolute(dir.join(&file)).unwrap_or_else(|_| dir.join(&file));
            let placed =
                plan(&rc, p.name, name, &backend.device).map_err(|e| e.context(dir.display()))?;
            let part = load_part(
                &backend.device,
                placed,
                p.name,
                Compiled::File(source, mapped),
                io,
                expected(&rc, &vae, p.name),
            )
            .map_err(|e| {
                e.context(format!(
                    "{} (compiled for {})",
                    dir.join(&file).display(),
                    rc.size_fields()
                ))
            })?;
            parts.push(part);
        }
        Self::assemble(rc, vae, parts, backend, name)
    }

    /// Writes `encoder.<ext>` (if compiled), `decoder.<ext>`, `rbln_config.json` and the
    /// diffusers `config.json` to `dir`, atomically (temporary sibling + rename). `dir` must not
    /// exist or be empty (see [`save_pretrained_overwrite`](Self::save_pretrained_overwrite)),
    /// and is never the directory the model was loaded from.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<(), PluginError> {
        self.save(dir.as_ref(), Overwrite::No)
    }

    /// [`save_pretrained`](Self::save_pretrained), replacing `dir` if it is a previous compiled
    /// directory (only `rbln_config.json`, `config.json` and `*.<ext>` files); a directory
    /// holding anything else is an error naming those files, and nothing is deleted.
    pub fn save_pretrained_overwrite(&self, dir: impl AsRef<Path>) -> Result<(), PluginError> {
        self.save(dir.as_ref(), Overwrite::Compiled)
    }

    fn save(&self, dir: &Path, overwrite: Overwrite) -> Result<(), PluginError> {
        let target = Target {
            overwrite,
            files: &[RBLN_CONFIG_FILE, CONFIG_FILE],
            extension: &self.extension,
            source: self.source.as_deref(),
        };
        crate::save::check_target(dir, &target)?;
        let json = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON values serialize");
        let mut files = Vec::new();
        for part in self.encoder.iter().chain([&self.decoder]) {
            files.push((
                format!("{}.{}", part.name, self.extension),
                part.artifact.bytes()?.into_owned(),
            ));
        }
        files.push((
            RBLN_CONFIG_FILE.to_string(),
            json(&self.rbln_config.to_json()),
        ));
        files.push((CONFIG_FILE.to_string(), json(&self.vae_config.to_json())));
        write_dir_atomically(dir, &files, &target)
    }

    /// Runs `part` on `x`: a batch beyond the compiled one in chunks (`slicing`), each chunk
    /// on its compiled plan, in tiles (`tiling`, when larger than the tile) or on a plan made
    /// for its shape on first use (`tiling`, or a last chunk smaller than the batch).
    /// `timeout` (seconds; else the part's own) bounds the whole call, every chunk and tile
    /// included.
    fn run(
        &self,
        part: &Part,
        method: &str,
        x: &Tensor,
        timeout: Option<f64>,
    ) -> Result<Tensor, PluginError> {
        let rc = &self.rbln_config;
        let shape = x.shape();
        let want = part.input.shape();
        let compiled = || {
            part.shapes
                .iter()
                .map(|s| shape_str(&s.shape()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if shape.len() != 4 || shape[1] != want[1] || shape[0] == 0 {
            return Err(PluginError::invalid(format!(
                "{method}: input '{}' has shape {} but the model takes [B, {}, H, W] (compiled \
                 shapes: {})",
                part.input.name,
                shape_str(&shape),
                want[1],
                compiled()
            )));
        }
        let b = rc.batch_size;
        if shape[0] > b && !rc.slicing {
            return Err(PluginError::invalid(format!(
                "{method}: input '{}' has {} rows but the model was compiled for batch_size {b}; \
                 compile with slicing: true to run larger batches in chunks of {b}",
                part.input.name, shape[0]
            )));
        }
        if shape[0] < b && !rc.tiling.enabled {
            return Err(PluginError::invalid(format!(
                "{method}: input '{}' has {} rows but the model was compiled for batch_size {b}",
                part.input.name, shape[0]
            )));
        }
        let replicas = self.executable(part, method)?;
        let compiled_size = part.shapes.iter().any(|s| s.shape()[2..] == shape[2..]);
        if !compiled_size && !rc.tiling.enabled {
            return Err(PluginError::invalid(format!(
                "{method}: input '{}' has shape {} but the model was compiled for {} ({}); \
                 recompile for other shapes, or with tiling",
                part.input.name,
                shape_str(&shape),
                compiled(),
                rc.size_fields()
            )));
        }
        let limit = timeout.or(part.placement.timeout);
        let start = std::time::Instant::now();
        let runs = std::cell::Cell::new(0usize);
        let timed_out = |e: PluginError| {
            e.context(format!(
                "model {}, part {}, timeout {} s",
                self.name,
                part.name,
                limit.unwrap_or(0.0)
            ))
        };
        let run_one = |t: &Tensor, any: bool| -> Result<Tensor, PluginError> {
            let inputs = RVec::from(vec![NamedTensor::new(part.input.name.as_str(), t.clone())]);
            let mut options = serde_json::Map::new();
            if let Some(limit) = limit {
                // The first run has the whole limit; each later chunk or tile what is left.
                let left = match runs.get() {
                    0 => limit,
                    _ => limit - start.elapsed().as_secs_f64(),
                };
                if left <= 0.0 {
                    return Err(timed_out(PluginError::timeout(format!(
                        "{method}: the limit passed after {} runs of the {} (chunks or tiles)",
                        runs.get(),
                        part.name
                    ))));
                }
                options.insert("timeout".into(), left.into());
            }
            runs.set(runs.get() + 1);
            if any {
                options.insert("any_shape".into(), true.into());
            }
            let lease = replicas.lease();
            let ran = if options.is_empty() {
                lease.exe().run(inputs)
            } else {
                let options = Value::Object(options).to_string();
                lease.exe().run_with(inputs, options.as_str().into())
            };
            drop(lease);
            let outputs = ran.into_result().map_err(|e| {
                let e = e.context(format!("{method}: running the {}", part.name));
                if e.is_timeout() {
                    timed_out(e)
                } else {
                    e
                }
            })?;
            let out = outputs
                .into_iter()
                .find(|o| o.name == part.output.name)
                .ok_or_else(|| {
                    PluginError::internal(format!(
                        "{method}: the {} returned no '{}' output",
                        part.name, part.output.name
                    ))
                })?;
            let expect = output_shape(rc, &self.vae_config, part.name, &t.shape());
            if Some(out.tensor.shape()) != expect {
                return Err(PluginError::internal(format!(
                    "{method}: the {} returned shape {}, expected {:?}",
                    part.name,
                    shape_str(&out.tensor.shape()),
                    expect
                )));
            }
            Ok(out.tensor)
        };
        let geometry = rc.tiling.geometry(rc.vae_scale_factor);
        let tiles = if part.name == ENCODER.0 {
            geometry.encode
        } else {
            geometry.decode
        };
        let run_chunk = |t: &Tensor| -> Result<Tensor, PluginError> {
            let s = t.shape();
            if part.shapes.iter().any(|c| c.shape() == s) {
                run_one(t, false)
            } else if rc.tiling.enabled && (s[2] > tiles.tile || s[3] > tiles.tile) {
                crate::tiling::run_tiled(t, tiles, |tile| run_one(tile, true))
            } else {
                run_one(t, true)
            }
        };
        if shape[0] <= b {
            return run_chunk(x);
        }
        let row = shape[1] * shape[2] * shape[3];
        let mut data = Vec::new();
        let mut out_shape = Vec::new();
        for start in (0..shape[0]).step_by(b) {
            let n = b.min(shape[0] - start);
            let chunk = Tensor::new(
                vec![n, shape[1], shape[2], shape[3]],
                x.data()[start * row..(start + n) * row].to_vec(),
            )?;
            let y = run_chunk(&chunk)?;
            out_shape = y.shape();
            data.extend_from_slice(y.data());
        }
        out_shape[0] = shape[0];
        Tensor::new(out_shape, data)
    }

    /// The executable of `part`, created now if it is made on first use.
    fn executable<'a>(&self, part: &'a Part, method: &str) -> Result<&'a Replicas, PluginError> {
        let (exe, init) = match &part.runtime {
            Runtime::Loaded(exe) => return Ok(exe),
            Runtime::None => {
                return Err(PluginError::invalid(format!(
                    "{method}: the model was loaded with create_runtimes=false, so no runtime \
                     exists for the {}; load it with create_runtimes=true",
                    part.name
                )))
            }
            Runtime::OnFirstUse { exe, init } => (exe, init),
        };
        if let Some(e) = exe.get() {
            return Ok(e);
        }
        // One thread creates it; the others wait here and then find it made.
        let _guard = init.lock().unwrap_or_else(|p| p.into_inner());
        if exe.get().is_none() {
            let bytes = part
                .artifact
                .bytes()
                .map_err(|e| e.context(format!("{method}: creating the {} runtime", part.name)))?;
            let want = expected(&self.rbln_config, &self.vae_config, part.name);
            let made = load_exe(&self.device, &part.placement, part.name, &bytes, &want)
                .map_err(|e| e.context(format!("{method}: creating the {} runtime", part.name)))?;
            let _ = exe.set(made);
        }
        Ok(exe.get().expect("set above under the lock"))
    }

    /// Encodes images `x: [B, in_channels, H, W]` (exactly the compiled shape) into the latent
    /// distribution. Scaling / shift factors are not applied (pipelines do that).
    pub fn encode(&self, x: &Tensor) -> Result<LatentDistribution, PluginError> {
        self.encode_with(x, None)
    }

    /// [`encode`](Self::encode) with this call's `timeout` in seconds (default
    /// `rbln_config.timeout`).
    pub fn encode_with(
        &self,
        x: &Tensor,
        timeout: Option<f64>,
    ) -> Result<LatentDistribution, PluginError> {
        let enc = self.encoder.as_ref().ok_or_else(|| {
            PluginError::invalid(
                "encode: this RBLNAutoencoderKL was compiled with uses_encoder=false; recompile \
                 with uses_encoder=true",
            )
        })?;
        LatentDistribution::from_moments(&self.run(enc, "encode", x, timeout)?)
    }

    /// Decodes latents `z: [B, latent_channels, H / vsf, W / vsf]` into images
    /// `[B, out_channels, H, W]`.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor, PluginError> {
        self.decode_with(z, None)
    }

    /// [`decode`](Self::decode) with this call's `timeout` in seconds (default
    /// `rbln_config.timeout`).
    pub fn decode_with(&self, z: &Tensor, timeout: Option<f64>) -> Result<Tensor, PluginError> {
        self.run(&self.decoder, "decode", z, timeout)
    }

    /// Where and how each part runs: `{"model": name, "timeout": s, "activate_profiler": b,
    /// "parts": {"encoder": {"devices": [...], "loaded": true, "replicas": [info, ...]}, ...}}`
    /// (each replica's `Executable::info_json`: device, cores, profile totals).
    pub fn runtime_json(&self) -> Value {
        let mut parts = Map::new();
        for part in self.encoder.iter().chain([&self.decoder]) {
            let replicas = match &part.runtime {
                Runtime::None => None,
                Runtime::Loaded(r) => Some(r),
                Runtime::OnFirstUse { exe, .. } => exe.get(),
            };
            let mut v = serde_json::json!({
                "devices": part.placement.devices,
                "loaded": replicas.is_some(),
            });
            if let Some(r) = replicas {
                v["replicas"] = r.to_json();
            }
            parts.insert(part.name.to_string(), v);
        }
        let rt = &self.rbln_config.runtime;
        serde_json::json!({
            "model": self.name,
            "timeout": rt.timeout,
            "activate_profiler": rt.activate_profiler.unwrap_or(false),
            "parts": parts,
        })
    }

    /// The effective config.
    pub fn rbln_config(&self) -> &RBLNAutoencoderKLConfig {
        &self.rbln_config
    }

    /// The diffusers config (`scaling_factor`, `shift_factor`, ... for pipelines).
    pub fn vae_config(&self) -> &AutoencoderKLConfig {
        &self.vae_config
    }

    /// True if `dir` holds an `rbln_config.json` whose `cls_name` is `RBLNAutoencoderKLConfig`.
    pub fn is_compiled_dir(dir: &Path) -> bool {
        std::fs::read(dir.join(RBLN_CONFIG_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v.get("cls_name").and_then(Value::as_str) == Some(CLS_NAME))
    }
}
