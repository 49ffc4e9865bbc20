//! A test fixture plugin: the model class `HoldModel`, whose one method `echo` (input `x`
//! `[batch, 2]`, output `y = 2 x`) can be held at a gate so that a test decides when a batch
//! finishes, instead of guessing with sleeps.
//!
//! `rbln_config`: `{"batch_size": N, "gate": DIR}`. While `DIR/hold` exists, each call first
//! creates `DIR/entered-<k>` (k = 0, 1, ... per model) and then waits until `DIR/release`
//! exists. Without `hold` (e.g. the server's warm-up) calls run at once. While `DIR/timeout`
//! exists, each call fails with a `PluginError::timeout` (as a run past its time limit does).

use abi_stable::export_root_module;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_extern_fn;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RStr, RString, RVec};
use plugin_api::{
    guard, Backend, CompilerBox, DeviceBox, Export, MethodSpec, Model, ModelBox, ModelClass,
    ModelClassBox, ModelClass_TO, Model_TO, NamedTensor, PluginError, PluginInfo, PluginResult,
    PluginRoot, PluginRootRef, ProgressBox, Tensor, TensorSpec, ABI_VERSION,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The class name.
pub const CLASS_NAME: &str = "HoldModel";

/// The root module.
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
        name: RString::from("hold-plugin"),
        version: RString::from(env!("CARGO_PKG_VERSION")),
        abi_version: RString::from(ABI_VERSION),
        description: RString::from("test fixture: a model whose calls wait at a gate"),
    }
}

#[sabi_extern_fn]
fn model_classes() -> RVec<ModelClassBox> {
    RVec::from(vec![ModelClass_TO::from_value(HoldClass, TD_Opaque)])
}

#[sabi_extern_fn]
fn compilers() -> RVec<CompilerBox> {
    RVec::new()
}

#[sabi_extern_fn]
fn devices() -> RVec<DeviceBox> {
    RVec::new()
}

struct HoldClass;

impl ModelClass for HoldClass {
    fn name(&self) -> RString {
        RString::from(CLASS_NAME)
    }

    fn is_compiled_dir(&self, _dir: RStr<'_>) -> bool {
        false
    }

    fn from_pretrained(
        &self,
        _model_id: RStr<'_>,
        _export: Export,
        rbln_config_json: RStr<'_>,
        _rbln_kwargs_json: RStr<'_>,
        _backend: Backend,
        _progress: &ProgressBox,
    ) -> PluginResult<ModelBox> {
        guard(|| {
            let config: serde_json::Value = serde_json::from_str(rbln_config_json.as_str())
                .map_err(|e| PluginError::invalid(format!("rbln_config: {e}")))?;
            let batch = config
                .get("batch_size")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(1) as usize;
            let gate = config
                .get("gate")
                .and_then(serde_json::Value::as_str)
                .map(PathBuf::from);
            let model = HoldModel {
                batch,
                gate,
                calls: AtomicUsize::new(0),
            };
            Ok(Model_TO::from_value(model, TD_Opaque))
        })
    }
}

struct HoldModel {
    batch: usize,
    gate: Option<PathBuf>,
    calls: AtomicUsize,
}

impl HoldModel {
    fn wait_at_gate(&self) -> Result<(), PluginError> {
        let Some(gate) = &self.gate else {
            return Ok(());
        };
        if gate.join("timeout").exists() {
            return Err(PluginError::timeout(
                "model hold, part echo, timeout 0.001 s: the run was stopped",
            ));
        }
        if !gate.join("hold").exists() {
            return Ok(());
        }
        let k = self.calls.fetch_add(1, Ordering::SeqCst);
        std::fs::write(gate.join(format!("entered-{k}")), b"")
            .map_err(|e| PluginError::internal(format!("gate: {e}")))?;
        // Waits for a condition the test sets, not for an amount of time.
        while !gate.join("release").exists() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Ok(())
    }
}

impl Model for HoldModel {
    fn class_name(&self) -> RString {
        RString::from(CLASS_NAME)
    }

    fn rbln_config_json(&self) -> RString {
        RString::from(format!("{{\"batch_size\": {}}}", self.batch))
    }

    fn methods(&self) -> RVec<MethodSpec> {
        RVec::from(vec![MethodSpec {
            name: RString::from("echo"),
            inputs: RVec::from(vec![TensorSpec::f32("x", &[self.batch, 2])]),
            outputs: RVec::from(vec![TensorSpec::f32("y", &[self.batch, 2])]),
        }])
    }

    fn call(
        &self,
        method: RStr<'_>,
        inputs: RVec<NamedTensor>,
        _options_json: RStr<'_>,
    ) -> PluginResult<RVec<NamedTensor>> {
        guard(|| {
            if method.as_str() != "echo" {
                return Err(PluginError::not_found(format!("no method {method}")));
            }
            let [x] = inputs.as_slice() else {
                return Err(PluginError::invalid("echo takes one input"));
            };
            self.wait_at_gate()?;
            let y: Vec<f32> = x.tensor.data().iter().map(|v| 2.0 * v).collect();
            Ok(RVec::from(vec![NamedTensor::new(
                "y",
                Tensor::new(x.tensor.shape(), y)?,
            )]))
        })
    }

    fn save_pretrained(&self, _dir: RStr<'_>) -> PluginResult<()> {
        guard(|| Err(PluginError::unsupported("HoldModel is not saved")))
    }
}
