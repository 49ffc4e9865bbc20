//! The plugin boundary: the exported root module and the `ModelClass` / `Model` trait objects.
//! Every method goes through [`plugin_api::guard`] so no panic crosses the boundary.

use crate::vae::RBLNAutoencoderKL;
use abi_stable::export_root_module;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_extern_fn;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RStr, RString, RVec};
use plugin_api::{
    guard, Backend, CompilerBox, DeviceBox, Export, MethodSpec, Model, ModelBox, ModelClass,
    ModelClassBox, ModelClass_TO, Model_TO, NamedTensor, PluginError, PluginInfo, PluginResult,
    PluginRoot, PluginRootRef, ProgressBox, TensorSpec, ABI_VERSION,
};
use serde_json::Value;
use std::path::Path;

/// The class name the host looks models up by.
pub const CLASS_NAME: &str = "RBLNAutoencoderKL";

/// The root module of the `rbln-vae` plugin.
#[export_root_module]
pub fn get_library() -> PluginRootRef {
    PluginRoot {
        info,
        model_classes,
        compilers,
        devices,
    }
    .leak_into_prefix()
}

#[sabi_extern_fn]
fn info() -> PluginInfo {
    PluginInfo {
        name: RString::from("rbln-vae"),
        version: RString::from(env!("CARGO_PKG_VERSION")),
        abi_version: RString::from(ABI_VERSION),
        description: RString::from(
            "RBLNAutoencoderKL: diffusers' AutoencoderKL (VAE) compiled with any compiler/device plugin",
        ),
    }
}

#[sabi_extern_fn]
fn model_classes() -> RVec<ModelClassBox> {
    RVec::from(vec![model_class_box()])
}

#[sabi_extern_fn]
fn compilers() -> RVec<CompilerBox> {
    RVec::new()
}

#[sabi_extern_fn]
fn devices() -> RVec<DeviceBox> {
    RVec::new()
}

/// The `RBLNAutoencoderKL` model class as a trait object (re-exported from the crate root).
pub fn model_class_box() -> ModelClassBox {
    ModelClass_TO::from_value(VaeClass, TD_Opaque)
}

/// Parses a JSON object argument; the empty string means `{}`.
fn parse_object(what: &str, text: &str) -> Result<Value, PluginError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(other) => Err(PluginError::invalid(format!(
            "{what} must be a JSON object, got {other}"
        ))),
        Err(e) => Err(PluginError::invalid(format!(
            "{what} is not valid JSON: {e}"
        ))),
    }
}

struct VaeClass;

impl ModelClass for VaeClass {
    fn name(&self) -> RString {
        RString::from(CLASS_NAME)
    }

    fn is_compiled_dir(&self, dir: RStr<'_>) -> bool {
        guard(|| Ok(RBLNAutoencoderKL::is_compiled_dir(Path::new(dir.as_str()))))
            .into_result()
            .unwrap_or(false)
    }

    fn from_pretrained(
        &self,
        model_id: RStr<'_>,
        export: Export,
        rbln_config_json: RStr<'_>,
        rbln_kwargs_json: RStr<'_>,
        backend: Backend,
        progress: &ProgressBox,
    ) -> PluginResult<ModelBox> {
        guard(|| {
            let config = parse_object("rbln_config", rbln_config_json.as_str())?;
            let kwargs = parse_object("rbln_kwargs", rbln_kwargs_json.as_str())?;
            let m = RBLNAutoencoderKL::from_pretrained(
                model_id.as_str(),
                export,
                config,
                kwargs,
                backend,
                progress,
            )?;
            Ok(Model_TO::from_value(VaeModel(m), TD_Opaque))
        })
    }
    fn describe_dir(&self, dir: RStr<'_>) -> PluginResult<RString> {
        guard(|| {
            Ok(RString::from(
                describe(Path::new(dir.as_str()))?.to_string(),
            ))
        })
    }
}

/// The pipeline-facing facts of a diffusers or compiled directory (see
/// `plugin_api::ModelClass::describe_dir`): from `config.json`, and a compiled directory's
/// `rbln_config.json` must parse too.
fn describe(dir: &Path) -> Result<Value, PluginError> {
    let rbln = dir.join(crate::rbln_config::RBLN_CONFIG_FILE);
    if rbln.is_file() {
        let text = std::fs::read_to_string(&rbln)
            .map_err(|e| PluginError::invalid(format!("cannot read {}: {e}", rbln.display())))?;
        serde_json::from_str::<Value>(&text).map_err(|e| {
            PluginError::invalid(format!("{} is not valid JSON: {e}", rbln.display()))
        })?;
    }
    let c = crate::config::AutoencoderKLConfig::from_dir(dir)?;
    Ok(serde_json::json!({
        "in_channels": c.in_channels,
        "vae_scale_factor": c.vae_scale_factor(),
        "scaling_factor": c.scaling_factor,
        "shift_factor": c.shift_factor,
        "latents_mean": c.latents_mean,
        "latents_std": c.latents_std,
        "force_upcast": c.force_upcast,
    }))
}

struct VaeModel(RBLNAutoencoderKL);

impl VaeModel {
    fn specs(&self) -> Vec<MethodSpec> {
        let m = &self.0;
        let mut out = Vec::new();
        if let Some(enc) = &m.encoder {
            let latent = m.rbln_config().latent_shape();
            out.push(MethodSpec {
                name: RString::from("encode"),
                inputs: RVec::from(vec![enc.input.clone()]),
                outputs: RVec::from(vec![
                    TensorSpec::f32("mean", &latent),
                    TensorSpec::f32("logvar", &latent),
                ]),
            });
        }
        out.push(MethodSpec {
            name: RString::from("decode"),
            inputs: RVec::from(vec![m.decoder.input.clone()]),
            outputs: RVec::from(vec![m.decoder.output.clone()]),
        });
        out
    }

    fn call_inner(
        &self,
        method: &str,
        inputs: Vec<NamedTensor>,
        options: &str,
    ) -> Result<Vec<NamedTensor>, PluginError> {
        let options = parse_object("options", options)?;
        let (input_name, allowed): (&str, &[&str]) = match method {
            "encode" => ("x", &["seed", "timeout"]),
            "decode" => ("z", &["timeout"]),
            other => {
                let names: Vec<String> = self
                    .specs()
                    .into_iter()
                    .map(|s| s.name.into_string())
                    .collect();
                return Err(PluginError::not_found(format!(
                    "RBLNAutoencoderKL has no method '{other}'; available: {}",
                    names.join(", ")
                )));
            }
        };
        if let Some(k) = options
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
            .find(|k| !allowed.contains(&k.as_str()))
        {
            return Err(PluginError::invalid(format!(
                "{method}: unknown option '{k}' (accepted: {})",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        let x = match inputs.as_slice() {
            [one] if one.name.as_str() == input_name => &one.tensor,
            _ => {
                let got: Vec<&str> = inputs.iter().map(|t| t.name.as_str()).collect();
                return Err(PluginError::invalid(format!(
                    "{method} takes exactly one input named '{input_name}', got [{}]",
                    got.join(", ")
                )));
            }
        };
        let timeout = match options.get("timeout") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|t| *t > 0.0 && t.is_finite())
                    .ok_or_else(|| {
                        PluginError::invalid(format!(
                            "{method}: timeout must be a positive number of seconds, got {v}"
                        ))
                    })?,
            ),
        };
        if method == "decode" {
            return Ok(vec![NamedTensor::new(
                "sample",
                self.0.decode_with(x, timeout)?,
            )]);
        }
        let seed = match options.get("seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                PluginError::invalid(format!("encode: seed must be an integer >= 0, got {v}"))
            })?),
        };
        let dist = self.0.encode_with(x, timeout)?;
        let sample = seed.map(|s| NamedTensor::new("sample", dist.sample(s)));
        let mut out = vec![
            NamedTensor::new("mean", dist.mean),
            NamedTensor::new("logvar", dist.logvar),
        ];
        out.extend(sample);
        Ok(out)
    }
}

impl Model for VaeModel {
    fn class_name(&self) -> RString {
        RString::from(CLASS_NAME)
    }

    fn rbln_config_json(&self) -> RString {
        guard(|| Ok(RString::from(self.0.rbln_config().to_json_string())))
            .into_result()
            .unwrap_or_else(|e| RString::from(format!("{{\"error\": {:?}}}", e.message())))
    }

    fn methods(&self) -> RVec<MethodSpec> {
        guard(|| Ok(RVec::from(self.specs())))
            .into_result()
            .unwrap_or_default()
    }

    fn call(
        &self,
        method: RStr<'_>,
        inputs: RVec<NamedTensor>,
        options_json: RStr<'_>,
    ) -> PluginResult<RVec<NamedTensor>> {
        guard(|| {
            self.call_inner(method.as_str(), inputs.into_vec(), options_json.as_str())
                .map(RVec::from)
        })
    }

    fn save_pretrained(&self, dir: RStr<'_>) -> PluginResult<()> {
        guard(|| self.0.save_pretrained(dir.as_str()))
    }

    fn runtime_json(&self) -> RString {
        guard(|| Ok(RString::from(self.0.runtime_json().to_string())))
            .into_result()
            .unwrap_or_else(|e| RString::from(format!("{{\"error\": {:?}}}", e.message())))
    }
}
