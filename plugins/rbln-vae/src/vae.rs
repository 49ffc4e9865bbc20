//! `RBLNAutoencoderKL`: compile (or load) the VAE's graphs, save them, run encode / decode.

use crate::config::{AutoencoderKLConfig, CONFIG_FILE};
use crate::distribution::LatentDistribution;
use crate::graph::{build_decoder, build_encoder, DECODER, ENCODER};
use crate::model::AutoencoderKL;
use crate::rbln_config::{merge_user_config, RBLNAutoencoderKLConfig, CLS_NAME, RBLN_CONFIG_FILE};
use crate::save::{write_dir_atomically, Overwrite, Target};
use crate::weights::weights_file;
use plugin_api::abi_stable::std_types::{RStr, RVec};
use plugin_api::tensor::shape_str;
use plugin_api::{
    Backend, DeviceBox, ExecutableBox, Export, NamedTensor, PluginError, ProgressBox, Tensor,
    TensorSpec,
};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// One compiled graph: its artifact and, when runtimes are created, the loaded executable.
pub(crate) struct Part {
    /// `encoder` or `decoder`.
    pub name: &'static str,
    pub input: TensorSpec,
    pub output: TensorSpec,
    artifact: Artifact,
    runtime: Runtime,
}

/// Whether and when a part's executable exists.
enum Runtime {
    /// `create_runtimes=false`.
    None,
    /// Loaded when the model was.
    Loaded(ExecutableBox),
    /// Validated when the model was loaded (the device loaded it, checking version, checksum
    /// and signature, and dropped it), created again on first use. The encoder is kept this
    /// way: text-to-image serving never encodes, and its weights would otherwise stay in memory.
    OnFirstUse {
        exe: OnceLock<ExecutableBox>,
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
}

fn report(progress: &ProgressBox, stage: &str, done: u64, total: u64) {
    progress.report(RStr::from(stage), done, total);
}

fn specs(
    rc: &RBLNAutoencoderKLConfig,
    vae: &AutoencoderKLConfig,
    name: &str,
) -> (TensorSpec, TensorSpec) {
    let (h, w) = rc.sample_size;
    let (lh, lw) = rc.latent_sample_size();
    let b = rc.batch_size;
    if name == ENCODER.0 {
        (
            TensorSpec::f32(ENCODER.1, &rc.image_input_shape()),
            TensorSpec::f32(ENCODER.2, &[b, 2 * rc.latent_channels, lh, lw]),
        )
    } else {
        (
            TensorSpec::f32(DECODER.1, &rc.latent_shape()),
            TensorSpec::f32(DECODER.2, &[b, vae.out_channels, h, w]),
        )
    }
}

/// Loads `artifact` on `device` and checks its signature against the expected `input` and
/// `output`.
fn load_exe(
    device: &DeviceBox,
    name: &str,
    artifact: &[u8],
    input: &TensorSpec,
    output: &TensorSpec,
) -> Result<ExecutableBox, PluginError> {
    let exe = device
        .load(artifact.into())
        .into_result()
        .map_err(|e| e.context(format!("loading the {name} executable")))?;
    let (ins, outs) = (exe.inputs().into_vec(), exe.outputs().into_vec());
    if ins != [input.clone()] || outs != [output.clone()] {
        let fmt = |v: &[TensorSpec]| {
            v.iter()
                .map(|s| format!("{} {}", s.name, shape_str(&s.shape())))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(PluginError::invalid(format!(
            "the {name} executable has inputs ({}) and outputs ({}) but {RBLN_CONFIG_FILE} \
             implies inputs ({}) and outputs ({})",
            fmt(&ins),
            fmt(&outs),
            fmt(std::slice::from_ref(input)),
            fmt(std::slice::from_ref(output))
        )));
    }
    Ok(exe)
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
    when: When,
    name: &'static str,
    compiled: Compiled,
    (input, output): (TensorSpec, TensorSpec),
) -> Result<Part, PluginError> {
    let artifact: &[u8] = match &compiled {
        Compiled::Bytes(b) => b,
        Compiled::File(_, m) => m,
    };
    let runtime = match when {
        When::Never => Runtime::None,
        When::Now => Runtime::Loaded(load_exe(device, name, artifact, &input, &output)?),
        When::OnFirstUse => {
            drop(load_exe(device, name, artifact, &input, &output)?);
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
            let mut vae = Self::load_compiled(dir, &user, backend)?;
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
        let mut vae = Self::compile(model, &user, backend, progress)?;
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
        Self::compile(model, &user, backend, progress)
    }

    fn compile(
        model: AutoencoderKL,
        user: &Map<String, Value>,
        backend: Backend,
        progress: &ProgressBox,
    ) -> Result<Self, PluginError> {
        let rc = RBLNAutoencoderKLConfig::for_export(user, &model.config)?;
        let options = rc.compile_options_json();
        let (h, w) = rc.sample_size;
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
            let artifact = backend
                .compiler
                .compile(graph.into_blob()?, RStr::from(options.as_str()), progress)
                .into_result()
                .map_err(|e| e.context(&what))?
                .into_vec();
            let io = specs(&rc, &model.config, p.name);
            parts.push(load_part(
                &backend.device,
                when(rc.runtime.create_runtimes, p.name),
                p.name,
                Compiled::Bytes(artifact),
                io,
            )?);
        }
        Self::assemble(rc, model.config, parts, backend)
    }

    fn assemble(
        rbln_config: RBLNAutoencoderKLConfig,
        vae_config: AutoencoderKLConfig,
        mut parts: Vec<Part>,
        backend: Backend,
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
        })
    }

    fn load_compiled(
        dir: &Path,
        user: &Map<String, Value>,
        backend: Backend,
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
            let io = specs(&rc, &vae, p.name);
            let source = std::path::absolute(dir.join(&file)).unwrap_or_else(|_| dir.join(&file));
            let part = load_part(
                &backend.device,
                when(rc.runtime.create_runtimes, p.name),
                p.name,
                Compiled::File(source, mapped),
                io,
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
        Self::assemble(rc, vae, parts, backend)
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

    fn run(&self, part: &Part, method: &str, x: &Tensor) -> Result<Tensor, PluginError> {
        let want = part.input.shape();
        if x.shape() != want {
            return Err(PluginError::invalid(format!(
                "{method}: input '{}' has shape {} but the model was compiled for {} \
                 (batch_size {}, sample_size {:?}); recompile for other shapes",
                part.input.name,
                shape_str(&x.shape()),
                shape_str(&want),
                self.rbln_config.batch_size,
                self.rbln_config.sample_size
            )));
        }
        let exe = self.executable(part, method)?;
        let inputs = RVec::from(vec![NamedTensor::new(part.input.name.as_str(), x.clone())]);
        let outputs = exe
            .run(inputs)
            .into_result()
            .map_err(|e| e.context(format!("{method}: running the {}", part.name)))?;
        let out = outputs
            .into_iter()
            .find(|o| o.name == part.output.name)
            .ok_or_else(|| {
                PluginError::internal(format!(
                    "{method}: the {} returned no '{}' output",
                    part.name, part.output.name
                ))
            })?;
        if out.tensor.shape() != part.output.shape() {
            return Err(PluginError::internal(format!(
                "{method}: the {} returned shape {}, expected {}",
                part.name,
                shape_str(&out.tensor.shape()),
                shape_str(&part.output.shape())
            )));
        }
        Ok(out.tensor)
    }

    /// The executable of `part`, created now if it is made on first use.
    fn executable<'a>(
        &self,
        part: &'a Part,
        method: &str,
    ) -> Result<&'a ExecutableBox, PluginError> {
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
            let made = load_exe(&self.device, part.name, &bytes, &part.input, &part.output)
                .map_err(|e| e.context(format!("{method}: creating the {} runtime", part.name)))?;
            let _ = exe.set(made);
        }
        Ok(exe.get().expect("set above under the lock"))
    }

    /// Encodes images `x: [B, in_channels, H, W]` (exactly the compiled shape) into the latent
    /// distribution. Scaling / shift factors are not applied (pipelines do that).
    pub fn encode(&self, x: &Tensor) -> Result<LatentDistribution, PluginError> {
        let enc = self.encoder.as_ref().ok_or_else(|| {
            PluginError::invalid(
                "encode: this RBLNAutoencoderKL was compiled with uses_encoder=false; recompile \
                 with uses_encoder=true",
            )
        })?;
        LatentDistribution::from_moments(&self.run(enc, "encode", x)?)
    }

    /// Decodes latents `z: [B, latent_channels, H / vsf, W / vsf]` into images
    /// `[B, out_channels, H, W]`.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor, PluginError> {
        self.run(&self.decoder, "decode", z)
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
