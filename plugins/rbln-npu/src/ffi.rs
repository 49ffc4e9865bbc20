//! The stable-ABI boundary: trait implementations (each through [`plugin_api::guard`]) and the
//! exported root module. The only file that uses abi_stable.

use crate::plugin::{NpuCompiler, NpuDevice, ARTIFACT_EXTENSION, DESCRIPTION, NAME};
use crate::runtime::executable::NpuExecutable;
use abi_stable::export_root_module;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_extern_fn;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RSlice, RStr, RString, RVec};
use plugin_api::graph::GraphBlob;
use plugin_api::{
    guard, Backend, Compiler, CompilerBox, Compiler_TO, Device, DeviceBox, Device_TO, Executable,
    ExecutableBox, Executable_TO, ModelClassBox, NamedTensor, PluginInfo, PluginResult, PluginRoot,
    PluginRootRef, ProgressBox, TensorSpec,
};

/// Runs an infallible method through [`guard`]; a caught panic yields `fallback`.
fn guarded<T>(f: impl FnOnce() -> T, fallback: T) -> T {
    guard(|| Ok(f())).into_result().unwrap_or(fallback)
}

impl Compiler for NpuCompiler {
    fn name(&self) -> RString {
        guarded(|| NAME.into(), RString::new())
    }
    fn artifact_extension(&self) -> RString {
        guarded(|| ARTIFACT_EXTENSION.into(), RString::new())
    }
    fn compile(
        &self,
        graph: GraphBlob,
        options_json: RStr<'_>,
        progress: &ProgressBox,
    ) -> PluginResult<RVec<u8>> {
        guard(|| {
            let graph = graph.into_graph()?;
            let report = |stage: &str, done: u64, total: u64| {
                progress.report(RStr::from(stage), done, total)
            };
            self.compile_graph(graph, options_json.as_str(), &report)
                .map(RVec::from)
        })
    }
    fn inspect(&self, artifact: RSlice<'_, u8>) -> PluginResult<RString> {
        guard(|| {
            self.inspect_artifact(artifact.as_slice())
                .map(RString::from)
        })
    }
    fn compile_shapes(
        &self,
        graph: GraphBlob,
        extra_shapes: RVec<RVec<RVec<u64>>>,
        options_json: RStr<'_>,
        progress: &ProgressBox,
    ) -> PluginResult<RVec<u8>> {
        guard(|| {
            let graph = graph.into_graph()?;
            let extra: Vec<Vec<Vec<usize>>> = extra_shapes
                .iter()
                .map(|set| {
                    set.iter()
                        .map(|s| {
                            s.iter()
                                .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
                                .collect()
                        })
                        .collect()
                })
                .collect();
            let report = |stage: &str, done: u64, total: u64| {
                progress.report(RStr::from(stage), done, total)
            };
            self.compile_graph_shapes(graph, &extra, options_json.as_str(), &report)
                .map(RVec::from)
        })
    }
}

impl Device for NpuDevice {
    fn name(&self) -> RString {
        guarded(|| NAME.into(), RString::new())
    }
    fn description(&self) -> RString {
        guarded(|| self.description_text().into(), RString::new())
    }
    fn load(&self, artifact: RSlice<'_, u8>) -> PluginResult<ExecutableBox> {
        guard(|| {
            let exe = self.load_artifact(artifact.as_slice())?;
            Ok(Executable_TO::from_value(exe, TD_Opaque))
        })
    }
    fn configure(&self, options_json: RStr<'_>) -> PluginResult<RString> {
        guard(|| NpuDevice::configure(self, options_json.as_str()).map(RString::from))
    }
    fn devices_json(&self) -> RString {
        guarded(
            || self.devices().to_json().to_string().into(),
            RString::from("[]"),
        )
    }
    fn load_with(
        &self,
        artifact: RSlice<'_, u8>,
        options_json: RStr<'_>,
    ) -> PluginResult<ExecutableBox> {
        guard(|| {
            let exe = self.load_artifact_with(artifact.as_slice(), options_json.as_str())?;
            Ok(Executable_TO::from_value(exe, TD_Opaque))
        })
    }
}

impl Executable for NpuExecutable {
    fn inputs(&self) -> RVec<TensorSpec> {
        guarded(|| self.input_specs().into(), RVec::new())
    }
    fn outputs(&self) -> RVec<TensorSpec> {
        guarded(|| self.output_specs().into(), RVec::new())
    }
    fn run(&self, inputs: RVec<NamedTensor>) -> PluginResult<RVec<NamedTensor>> {
        guard(|| NpuExecutable::run(self, &inputs).map(RVec::from))
    }
    fn info_json(&self) -> RString {
        guarded(|| self.info_json().to_string().into(), RString::from("{}"))
    }
    fn run_with(
        &self,
        inputs: RVec<NamedTensor>,
        options_json: RStr<'_>,
    ) -> PluginResult<RVec<NamedTensor>> {
        guard(|| NpuExecutable::run_with(self, &inputs, options_json.as_str()).map(RVec::from))
    }
    fn shapes(&self) -> RVec<RVec<TensorSpec>> {
        guarded(
            || self.shape_specs().into_iter().map(RVec::from).collect(),
            RVec::new(),
        )
    }
}

/// The compiler as an FFI trait object.
pub fn compiler_box() -> CompilerBox {
    Compiler_TO::from_value(NpuCompiler, TD_Opaque)
}

/// A device object (its own device set, initially one device of all cores) as an FFI trait
/// object.
pub fn device_box() -> DeviceBox {
    Device_TO::from_value(NpuDevice::default(), TD_Opaque)
}

/// Compiler and device together.
pub fn backend() -> Backend {
    Backend {
        compiler: compiler_box(),
        device: device_box(),
    }
}

#[sabi_extern_fn]
fn info() -> PluginInfo {
    PluginInfo {
        name: NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        abi_version: plugin_api::ABI_VERSION.into(),
        description: DESCRIPTION.into(),
    }
}

#[sabi_extern_fn]
fn model_classes() -> RVec<ModelClassBox> {
    RVec::new()
}

#[sabi_extern_fn]
fn compilers() -> RVec<CompilerBox> {
    RVec::from(vec![compiler_box()])
}

#[sabi_extern_fn]
fn devices() -> RVec<DeviceBox> {
    RVec::from(vec![device_box()])
}

/// The root module the host loads.
#[export_root_module]
pub fn get_root_module() -> PluginRootRef {
    PluginRoot {
        info,
        model_classes,
        compilers,
        devices,
    }
    .leak_into_prefix()
}
