//! The plain-Rust compiler and device that `ffi` exports through plugin-api.

use crate::device::DeviceSet;
use crate::kernels;
use crate::runtime::control::RunOptions;
use crate::runtime::executable::NpuExecutable;
use crate::{compiler, inspect};
use plugin_api::graph::Graph;
use plugin_api::{NamedTensor, PluginError};
use std::sync::{Arc, RwLock};

/// Name of the compiler and of the device.
pub const NAME: &str = "rbln-npu";
/// File extension of artifacts.
pub const ARTIFACT_EXTENSION: &str = "rbln";
/// One line describing the plugin.
pub const DESCRIPTION: &str = "RBLN NPU compiler and runtime (no NPU hardware present: compiled graphs execute on host CPU cores with rbln-npu's own kernels)";

/// The ahead-of-time compiler (`plugin_api::Compiler`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NpuCompiler;

impl NpuCompiler {
    /// Compiles `graph`; `options_json` accepts `npu` and `num_devices`; `progress` receives
    /// `(stage, done, total)`.
    pub fn compile_graph(
        &self,
        graph: Graph,
        options_json: &str,
        progress: &dyn Fn(&str, u64, u64),
    ) -> Result<Vec<u8>, PluginError> {
        kernels::isa::checked()?;
        compiler::compile(graph, options_json, progress)
    }

    /// Compiles `graph` for its own input shapes and each set in `extra`, into one artifact
    /// (see [`compiler::compile_shapes`]).
    pub fn compile_graph_shapes(
        &self,
        graph: Graph,
        extra: &[Vec<Vec<usize>>],
        options_json: &str,
        progress: &dyn Fn(&str, u64, u64),
    ) -> Result<Vec<u8>, PluginError> {
        kernels::isa::checked()?;
        compiler::compile_shapes(graph, extra, options_json, progress)
    }

    /// A readable summary of an artifact.
    pub fn inspect_artifact(&self, bytes: &[u8]) -> Result<String, PluginError> {
        inspect::inspect(bytes)
    }
}

/// The runtime (`plugin_api::Device`): a set of devices, each a set of host CPU cores with its
/// own thread pool ([`crate::device`]); loads artifacts onto one and runs them there. Until
/// [`configure`](Self::configure) is called it holds one device, 0, of every core this process
/// may use. Clones share the set.
#[derive(Debug, Clone)]
pub struct NpuDevice {
    set: Arc<RwLock<Arc<DeviceSet>>>,
}

impl Default for NpuDevice {
    fn default() -> Self {
        NpuDevice {
            set: Arc::new(RwLock::new(Arc::new(DeviceSet::all_cores()))),
        }
    }
}

impl NpuDevice {
    /// The current device set.
    pub fn devices(&self) -> Arc<DeviceSet> {
        match self.set.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the device set (see [`DeviceSet::from_options`]); returns it as JSON.
    /// Executables already loaded keep the device they were loaded on.
    pub fn configure(&self, options_json: &str) -> Result<String, PluginError> {
        let set = Arc::new(DeviceSet::from_options(options_json)?);
        let json = set.to_json().to_string();
        match self.set.write() {
            Ok(mut g) => *g = set,
            Err(p) => *p.into_inner() = set,
        }
        Ok(json)
    }

    /// Says plainly what executes the code.
    pub fn description_text(&self) -> String {
        format!(
            "rbln-npu runtime: no NPU hardware is present; compiled graphs execute on host CPU \
             cores, devices {}; kernel path: {}",
            self.devices().summary(),
            kernels::isa::describe()
        )
    }

    /// Verifies and loads an artifact onto device 0 (or the first device).
    pub fn load_artifact(&self, bytes: &[u8]) -> Result<NpuExecutable, PluginError> {
        self.load_artifact_with(bytes, "{}")
    }

    /// Verifies and loads an artifact with load options (`device`, `timeout`, `profile`,
    /// `label`; see [`RunOptions::from_json`]); without `device`, on device 0 if it exists, else
    /// the first.
    pub fn load_artifact_with(
        &self,
        bytes: &[u8],
        options_json: &str,
    ) -> Result<NpuExecutable, PluginError> {
        let set = self.devices();
        let device = match RunOptions::device_id(options_json)? {
            Some(id) => set.get(id)?.clone(),
            None => match set.get(0) {
                Ok(d) => d.clone(),
                Err(e) => set.devices().first().cloned().ok_or(e)?,
            },
        };
        let opts = RunOptions::from_json(options_json, Some(device))?;
        NpuExecutable::load_with(bytes, opts)
    }
}

/// Compiles `graph` to artifact bytes without progress reporting.
pub fn compile_graph(graph: Graph, options_json: &str) -> Result<Vec<u8>, PluginError> {
    kernels::isa::checked()?;
    compiler::compile(graph, options_json, &|_, _, _| {})
}

/// Compiles `graph`, loads the artifact and runs it once.
pub fn compile_and_run(
    graph: Graph,
    inputs: &[NamedTensor],
) -> Result<Vec<NamedTensor>, PluginError> {
    let bytes = compile_graph(graph, "")?;
    NpuExecutable::load(&bytes)?.run(inputs)
}
