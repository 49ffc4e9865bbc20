//! Shares registry-owned compilers and devices with models.
//!
//! `ModelClass::from_pretrained` takes its [`Backend`] by value, but the registry keeps one
//! instance of each compiler and device for the whole process (a device may own a thread pool).
//! These forwarding wrappers hand a model an owned trait object that calls the shared one.

use super::{PluginRegistry, RegistryError};
use plugin_api::abi_stable::sabi_trait::TD_Opaque;
use plugin_api::abi_stable::std_types::{RSlice, RStr, RString, RVec};
use plugin_api::graph::GraphBlob;
use plugin_api::{
    Backend, Compiler, CompilerBox, Compiler_TO, Device, DeviceBox, Device_TO, ExecutableBox,
    PluginResult, ProgressBox,
};
use std::sync::Arc;

struct SharedCompiler(Arc<CompilerBox>);

impl Compiler for SharedCompiler {
    fn name(&self) -> RString {
        self.0.name()
    }
    fn artifact_extension(&self) -> RString {
        self.0.artifact_extension()
    }
    fn compile(
        &self,
        graph: GraphBlob,
        options_json: RStr<'_>,
        progress: &ProgressBox,
    ) -> PluginResult<RVec<u8>> {
        self.0.compile(graph, options_json, progress)
    }
    fn inspect(&self, artifact: RSlice<'_, u8>) -> PluginResult<RString> {
        self.0.inspect(artifact)
    }
    fn compile_shapes(
        &self,
        graph: GraphBlob,
        extra_shapes: RVec<RVec<RVec<u64>>>,
        options_json: RStr<'_>,
        progress: &ProgressBox,
    ) -> PluginResult<RVec<u8>> {
        self.0
            .compile_shapes(graph, extra_shapes, options_json, progress)
    }
}

struct SharedDevice(Arc<DeviceBox>);

impl Device for SharedDevice {
    fn name(&self) -> RString {
        self.0.name()
    }
    fn description(&self) -> RString {
        self.0.description()
    }
    fn load(&self, artifact: RSlice<'_, u8>) -> PluginResult<ExecutableBox> {
        self.0.load(artifact)
    }
    fn configure(&self, options_json: RStr<'_>) -> PluginResult<RString> {
        self.0.configure(options_json)
    }
    fn devices_json(&self) -> RString {
        self.0.devices_json()
    }
    fn load_with(
        &self,
        artifact: RSlice<'_, u8>,
        options_json: RStr<'_>,
    ) -> PluginResult<ExecutableBox> {
        self.0.load_with(artifact, options_json)
    }
}

impl PluginRegistry {
    /// A [`Backend`] for a model, using the shared compiler and device of these names.
    pub fn backend(&self, compiler: &str, device: &str) -> Result<Backend, RegistryError> {
        let compiler = Arc::clone(self.compiler(compiler)?);
        let device = Arc::clone(self.device(device)?);
        Ok(Backend {
            compiler: Compiler_TO::from_value(SharedCompiler(compiler), TD_Opaque),
            device: Device_TO::from_value(SharedDevice(device), TD_Opaque),
        })
    }
}
