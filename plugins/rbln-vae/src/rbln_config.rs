//! `RBLNAutoencoderKLConfig`: what gets compiled (frozen once compiled and written to
//! `rbln_config.json`) and how it runs (runtime options, never written).

use crate::config::AutoencoderKLConfig;
pub use crate::rbln_args::{merge_user_config, DeviceSpec, CLS_NAME};
use crate::rbln_args::{parse_args, positive, sample_sizes, Args};
use crate::tiling::Tiling;
use plugin_api::{DType, PluginError};
use serde_json::{json, Map, Value};

/// The file a compiled directory is recognised by.
pub const RBLN_CONFIG_FILE: &str = "rbln_config.json";

/// Runtime options: how a compiled model runs. Never written to `rbln_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeOptions {
    /// `device`: index or list of indices (only device 0 exists).
    pub device: Option<DeviceSpec>,
    /// `device_map`: part (`encoder` / `decoder`) -> device index.
    pub device_map: Option<Vec<(String, u64)>>,
    /// `create_runtimes`: load the executables (default true); false compiles/loads artifacts
    /// only, and `encode`/`decode` then fail.
    pub create_runtimes: bool,
    /// `activate_profiler`.
    pub activate_profiler: Option<bool>,
    /// `timeout` in seconds.
    pub timeout: Option<f64>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            device: None,
            device_map: None,
            create_runtimes: true,
            activate_profiler: None,
            timeout: None,
        }
    }
}

/// The configuration of a compiled (or to be compiled) `RBLNAutoencoderKL`.
#[derive(Debug, Clone, PartialEq)]
pub struct RBLNAutoencoderKLConfig {
    /// Images per call (compile-time).
    pub batch_size: usize,
    /// Image `(height, width)`; multiples of `vae_scale_factor` (compile-time).
    pub sample_size: (usize, usize),
    /// Every compiled `(height, width)`, `sample_size` first (a `sample_size` list).
    pub sample_sizes: Vec<(usize, usize)>,
    /// Whether the encoder is compiled too (compile-time; default false).
    pub uses_encoder: bool,
    /// Spatial factor image/latent, `2^(len(block_out_channels) - 1)` (compile-time).
    pub vae_scale_factor: usize,
    /// Image channels (compile-time, from `config.json`).
    pub in_channels: usize,
    /// Latent channels (compile-time, from `config.json`).
    pub latent_channels: usize,
    /// Target NPU name passed to the compiler (compile-time).
    pub npu: Option<String>,
    /// Number of devices passed to the compiler (compile-time).
    pub num_devices: Option<u64>,
    /// Whether the compiler may use Winograd convolutions (compile-time; default true, written
    /// to `rbln_config.json` only when given). False keeps every convolution on the GEMM path,
    /// whose results match a plain convolution to float rounding.
    pub winograd: Option<bool>,
    /// The most memory, in bytes, one run of a compiled graph may need (compile-time; written
    /// only when given; default: the compiler's, rbln-npu's is 3/4 of the physical memory). A
    /// larger plan is a compile error, and loading checks it again.
    pub memory_budget: Option<u64>,
    /// How it runs.
    pub runtime: RuntimeOptions,
    /// `slicing`: a batch larger than `batch_size` runs in chunks of `batch_size`.
    pub slicing: bool,
    /// `tiling`: inputs larger than the tile run in tiles (see [`crate::tiling`]).
    pub tiling: Tiling,
}

/// One compiled graph as `_compile_cfgs` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPart {
    /// `encoder` or `decoder`: also the artifact's file stem.
    pub name: &'static str,
    /// The graph input's name (`x` or `z`).
    pub input: &'static str,
    /// Its static shape.
    pub shape: Vec<usize>,
}

impl RBLNAutoencoderKLConfig {
    /// Resolves the config for compiling `vae` from the merged user map (kwargs already merged
    /// over `rbln_config`, see [`merge_user_config`]).
    pub fn for_export(
        user: &Map<String, Value>,
        vae: &AutoencoderKLConfig,
    ) -> Result<RBLNAutoencoderKLConfig, PluginError> {
        let a = parse_args(user)?;
        let vsf = vae.vae_scale_factor();
        let derived = |field: &str, given: Option<usize>, want: usize, why: &str| match given {
            Some(g) if g != want => Err(PluginError::invalid(format!(
                "{field}: {g} was given but config.json implies {want} ({why})"
            ))),
            _ => Ok(want),
        };
        let n = vae.block_out_channels.len();
        let sizes = a
            .sample_size
            .clone()
            .unwrap_or_else(|| vec![vae.sample_size]);
        let mut tiling = a.tiling.clone().unwrap_or_else(Tiling::off);
        tiling.resolve(vae.sample_size.0, vsf)?;
        let c = RBLNAutoencoderKLConfig {
            batch_size: a.batch_size.unwrap_or(1),
            sample_size: sizes[0],
            sample_sizes: sizes,
            slicing: a.slicing.unwrap_or(false),
            tiling,
            uses_encoder: a.uses_encoder.unwrap_or(false),
            vae_scale_factor: derived(
                "vae_scale_factor",
                a.vae_scale_factor,
                vsf,
                &format!("2^(len(block_out_channels) - 1) with {n} blocks"),
            )?,
            in_channels: derived("in_channels", a.in_channels, vae.in_channels, "in_channels")?,
            latent_channels: derived(
                "latent_channels",
                a.latent_channels,
                vae.latent_channels,
                "latent_channels",
            )?,
            npu: a.npu.clone(),
            num_devices: a.num_devices,
            winograd: a.winograd,
            memory_budget: a.memory_budget,
            runtime: runtime_options(&a),
        };
        c.check_sample_size()?;
        Ok(c)
    }

    /// Rebuilds the config stored in a compiled directory's `rbln_config.json` and applies the
    /// merged user map: runtime options are taken freely, compile-time fields must equal the
    /// stored values (compared as values: `512` equals `[512, 512]`).
    pub fn for_load(
        stored: &Value,
        user: &Map<String, Value>,
    ) -> Result<RBLNAutoencoderKLConfig, PluginError> {
        let mut c = Self::from_stored(stored).map_err(|e| e.context(RBLN_CONFIG_FILE))?;
        let a = parse_args(user)?;
        let frozen: [(&str, Option<Value>, Value); 12] = [
            (
                "batch_size",
                a.batch_size.map(|v| json!(v)),
                json!(c.batch_size),
            ),
            (
                "sample_size",
                a.sample_size.as_deref().map(sizes_json),
                sizes_json(&c.sample_sizes),
            ),
            ("slicing", a.slicing.map(|v| json!(v)), json!(c.slicing)),
            (
                "tiling",
                a.tiling.clone().map(|mut t| {
                    // An unresolved tile size means the stored one.
                    if t.enabled && t.tile_sample_min_size.is_none() {
                        t.tile_sample_min_size = c.tiling.tile_sample_min_size;
                    }
                    t.to_json()
                }),
                c.tiling.to_json(),
            ),
            (
                "uses_encoder",
                a.uses_encoder.map(|v| json!(v)),
                json!(c.uses_encoder),
            ),
            (
                "vae_scale_factor",
                a.vae_scale_factor.map(|v| json!(v)),
                json!(c.vae_scale_factor),
            ),
            (
                "in_channels",
                a.in_channels.map(|v| json!(v)),
                json!(c.in_channels),
            ),
            (
                "latent_channels",
                a.latent_channels.map(|v| json!(v)),
                json!(c.latent_channels),
            ),
            ("npu", a.npu.as_ref().map(|v| json!(v)), json!(c.npu)),
            (
                "num_devices",
                a.num_devices.map(|v| json!(v)),
                json!(c.num_devices),
            ),
            (
                "winograd",
                a.winograd.map(|v| json!(v)),
                json!(c.winograd.unwrap_or(true)),
            ),
            (
                "memory_budget",
                a.memory_budget.map(|v| json!(v)),
                json!(c.memory_budget),
            ),
        ];
        for (field, given, have) in frozen {
            if let Some(given) = given {
                if given != have {
                    return Err(PluginError::invalid(format!(
                        "{field}: the model was compiled with {field} = {have} (see \
                         {RBLN_CONFIG_FILE}) but {given} was given; compile-time fields cannot \
                         change when loading a compiled model (recompile with export)"
                    )));
                }
            }
        }
        c.runtime = runtime_options(&a);
        Ok(c)
    }

    fn from_stored(v: &Value) -> Result<RBLNAutoencoderKLConfig, PluginError> {
        let m = v
            .as_object()
            .ok_or_else(|| PluginError::invalid("must be a JSON object"))?;
        if m.get("cls_name").and_then(Value::as_str) != Some(CLS_NAME) {
            return Err(PluginError::invalid(format!(
                "cls_name is {}, expected \"{CLS_NAME}\"",
                m.get("cls_name").unwrap_or(&Value::Null)
            )));
        }
        // The stored fields are the user-given keys plus two that only the file holds; an
        // unknown one is refused as in `rbln_config` (a misspelled field would be ignored).
        let mut given = m.clone();
        given.remove("optimum_rbln_version");
        given.remove("_compile_cfgs");
        parse_args(&given)?;
        let field = |k: &str| {
            m.get(k)
                .filter(|v| !v.is_null())
                .ok_or_else(|| PluginError::invalid(format!("missing field '{k}'")))
        };
        crate::rbln_args::dtype(field("dtype")?)?;
        let cfgs = field("_compile_cfgs")?
            .as_array()
            .ok_or_else(|| PluginError::invalid("_compile_cfgs must be a list"))?;
        let first = cfgs
            .first()
            .ok_or_else(|| PluginError::invalid("_compile_cfgs is empty"))?;
        let sizes = sample_sizes(field("sample_size")?)?;
        let tiling = match m.get("tiling") {
            None | Some(Value::Null) => Tiling::off(),
            Some(v) => Tiling::from_json(v)?,
        };
        if tiling.enabled && tiling.tile_sample_min_size.is_none() {
            return Err(PluginError::invalid(
                "tiling: a stored tiling needs its tile_sample_min_size",
            ));
        }
        let c = RBLNAutoencoderKLConfig {
            batch_size: positive("batch_size", field("batch_size")?)?,
            sample_size: sizes[0],
            sample_sizes: sizes,
            slicing: match m.get("slicing") {
                None | Some(Value::Null) => false,
                Some(v) => v.as_bool().ok_or_else(|| {
                    PluginError::invalid(format!("slicing must be true or false, got {v}"))
                })?,
            },
            tiling,
            uses_encoder: field("uses_encoder")?
                .as_bool()
                .ok_or_else(|| PluginError::invalid("uses_encoder must be true or false"))?,
            vae_scale_factor: positive("vae_scale_factor", field("vae_scale_factor")?)?,
            in_channels: positive("in_channels", field("in_channels")?)?,
            latent_channels: positive("latent_channels", field("latent_channels")?)?,
            npu: first.get("npu").and_then(Value::as_str).map(str::to_string),
            num_devices: first.get("num_devices").and_then(Value::as_u64),
            winograd: match m.get("winograd") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_bool().ok_or_else(|| {
                    PluginError::invalid(format!("winograd must be true or false, got {v}"))
                })?),
            },
            memory_budget: match m.get("memory_budget") {
                None | Some(Value::Null) => None,
                Some(v) => Some(crate::rbln_args::memory_budget(v)?),
            },
            runtime: RuntimeOptions::default(),
        };
        if !c.vae_scale_factor.is_power_of_two() {
            return Err(PluginError::invalid(format!(
                "vae_scale_factor must be a power of two, got {}",
                c.vae_scale_factor
            )));
        }
        c.check_sample_size()?;
        let mut tiling = c.tiling.clone();
        tiling.resolve(c.sample_size.0, c.vae_scale_factor)?;
        let listed = serde_json::to_value(c.compile_cfgs()).unwrap_or(Value::Null);
        if Value::Array(cfgs.clone()) != listed {
            return Err(PluginError::invalid(format!(
                "_compile_cfgs {} do not match the config fields, which imply {listed}",
                Value::Array(cfgs.clone())
            )));
        }
        Ok(c)
    }

    fn check_sample_size(&self) -> Result<(), PluginError> {
        let vsf = self.vae_scale_factor;
        for &(h, w) in &self.sample_sizes {
            if h == 0 || w == 0 || h % vsf != 0 || w % vsf != 0 {
                return Err(PluginError::invalid(format!(
                    "sample_size [{h}, {w}]: height and width must be positive multiples of \
                     vae_scale_factor ({vsf})"
                )));
            }
        }
        Ok(())
    }

    /// The fields that size the compiled graphs, for messages: `batch_size 1, sample_size [512,
    /// 512]`.
    pub fn size_fields(&self) -> String {
        let one = |&(h, w): &(usize, usize)| format!("[{h}, {w}]");
        let sizes = match &self.sample_sizes[..] {
            [s] => one(s),
            many => format!("[{}]", many.iter().map(one).collect::<Vec<_>>().join(", ")),
        };
        format!("batch_size {}, sample_size {sizes}", self.batch_size)
    }

    /// Every compiled `(height, width)`: the sample sizes, then the tile when tiling is on and
    /// the tile is not one of them.
    pub fn compiled_sizes(&self) -> Vec<(usize, usize)> {
        let mut sizes = self.sample_sizes.clone();
        if let (true, Some(t)) = (self.tiling.enabled, self.tiling.tile_sample_min_size) {
            if !sizes.contains(&(t, t)) {
                sizes.push((t, t));
            }
        }
        sizes
    }

    /// The input shape of part `name` (`encoder` or `decoder`) at image size `(h, w)`.
    pub fn part_shape(&self, name: &str, (h, w): (usize, usize)) -> Vec<usize> {
        let vsf = self.vae_scale_factor;
        if name == "encoder" {
            vec![self.batch_size, self.in_channels, h, w]
        } else {
            vec![self.batch_size, self.latent_channels, h / vsf, w / vsf]
        }
    }

    /// `(H / vsf, W / vsf)`.
    pub fn latent_sample_size(&self) -> (usize, usize) {
        let (h, w) = self.sample_size;
        (h / self.vae_scale_factor, w / self.vae_scale_factor)
    }

    /// The encoder input shape `[B, in_channels, H, W]`.
    pub fn image_input_shape(&self) -> Vec<usize> {
        let (h, w) = self.sample_size;
        vec![self.batch_size, self.in_channels, h, w]
    }

    /// The decoder input shape `[B, latent_channels, H / vsf, W / vsf]`.
    pub fn latent_shape(&self) -> Vec<usize> {
        let (h, w) = self.latent_sample_size();
        vec![self.batch_size, self.latent_channels, h, w]
    }

    /// The compiled graphs: `encoder` (when `uses_encoder`) then `decoder`.
    pub fn parts(&self) -> Vec<CompiledPart> {
        let mut out = Vec::new();
        if self.uses_encoder {
            out.push(CompiledPart {
                name: "encoder",
                input: "x",
                shape: self.image_input_shape(),
            });
        }
        out.push(CompiledPart {
            name: "decoder",
            input: "z",
            shape: self.latent_shape(),
        });
        out
    }

    /// One entry per compiled part and size (see [`compiled_sizes`](Self::compiled_sizes)).
    fn compile_cfgs(&self) -> Vec<Value> {
        self.parts()
            .into_iter()
            .flat_map(|p| {
                self.compiled_sizes().into_iter().map(move |hw| {
                    json!({
                        "compiled_model_name": p.name,
                        "input_info": [[p.input, self.part_shape(p.name, hw), "float32"]],
                        "npu": self.npu,
                        "num_devices": self.num_devices,
                    })
                })
            })
            .collect()
    }

    /// The options passed to `Compiler::compile` (only the ones that are set).
    pub fn compile_options_json(&self) -> String {
        let mut m = Map::new();
        if let Some(npu) = &self.npu {
            m.insert("npu".into(), json!(npu));
        }
        if let Some(n) = self.num_devices {
            m.insert("num_devices".into(), json!(n));
        }
        if let Some(w) = self.winograd {
            m.insert("winograd".into(), json!(w));
        }
        if let Some(b) = self.memory_budget {
            m.insert("memory_budget".into(), json!(b));
        }
        Value::Object(m).to_string()
    }

    /// The compile-time fields as `rbln_config.json` holds them, in the original's key order.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "cls_name": CLS_NAME,
            "dtype": DType::F32.name(),
            "optimum_rbln_version": format!("rbln-vae {}", env!("CARGO_PKG_VERSION")),
            "_compile_cfgs": self.compile_cfgs(),
            "batch_size": self.batch_size,
            "uses_encoder": self.uses_encoder,
            "vae_scale_factor": self.vae_scale_factor,
            "in_channels": self.in_channels,
            "latent_channels": self.latent_channels,
            "sample_size": sizes_json(&self.sample_sizes),
        });
        if let Some(m) = v.as_object_mut() {
            if self.slicing {
                m.insert("slicing".into(), json!(true));
            }
            if self.tiling.enabled {
                m.insert("tiling".into(), self.tiling.to_json());
            }
        }
        if let (Some(w), Some(m)) = (self.winograd, v.as_object_mut()) {
            m.insert("winograd".into(), json!(w));
        }
        if let (Some(b), Some(m)) = (self.memory_budget, v.as_object_mut()) {
            m.insert("memory_budget".into(), json!(b));
        }
        v
    }

    /// [`Self::to_json`], pretty-printed.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(&self.to_json()).expect("a JSON value always serializes")
    }
}

/// One size as `[h, w]`, several as `[[h, w], ...]`.
fn sizes_json(sizes: &[(usize, usize)]) -> Value {
    match sizes {
        [(h, w)] => json!([h, w]),
        many => Value::Array(many.iter().map(|(h, w)| json!([h, w])).collect()),
    }
}

fn runtime_options(a: &Args) -> RuntimeOptions {
    RuntimeOptions {
        device: a.device.clone(),
        device_map: a.device_map.clone(),
        create_runtimes: a.create_runtimes.unwrap_or(true),
        activate_profiler: a.activate_profiler,
        timeout: a.timeout,
    }
}

#[cfg(test)]
#[path = "rbln_config_tests.rs"]
mod tests;
