//! The plain-Rust compiler and device that `ffi` exports through plugin-api.

use crate::kernels;
use crate::runtime::executable::NpuExecutable;
use crate::{compiler, inspect};
use plugin_api::graph::Graph;
use plugin_api::{NamedTensor, PluginError};

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

/// The runtime (`plugin_api::Device`): loads artifacts and runs them on host CPU cores.
#[derive(Debug, Clone, Copy, Default)]
pub struct NpuDevice;

impl NpuDevice {
    /// Says plainly what executes the code.
    pub fn description_text(&self) -> String {
        format!(
            "rbln-npu runtime: no NPU hardware is present; compiled graphs execute on {} host CPU thread(s); kernel path: {}",
            rayon::current_num_threads(),
            kernels::isa::describe()
        )
    }

    /// Verifies and loads an artifact.
    pub fn load_artifact(&self, bytes: &[u8]) -> Result<NpuExecutable, PluginError> {
        NpuExecutable::load(bytes)
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
