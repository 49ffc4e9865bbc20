//! The plugin traits. All synchronous; all object-safe through `#[sabi_trait]`.
//!
//! Implementations must wrap every method body in [`crate::guard`] so that no panic unwinds
//! across the boundary.

// `ModelClass::from_pretrained` takes `&self` (the class object), as a factory method must.
#![allow(clippy::wrong_self_convention)]

use crate::error::{PluginError, PluginResult};
use crate::graph::GraphBlob;
use crate::tensor::{NamedTensor, TensorSpec};
use abi_stable::sabi_trait;
use abi_stable::std_types::RResult;
use abi_stable::std_types::{RBox, RSlice, RStr, RString, RVec};
use abi_stable::StableAbi;

/// Receives progress of long operations (compilation, weight loading).
#[sabi_trait]
pub trait Progress: Send + Sync {
    /// `stage` names the step (e.g. `compile decoder`); `done` of `total` units are finished.
    #[sabi(last_prefix_field)]
    fn report(&self, stage: RStr<'_>, done: u64, total: u64);
}

/// A boxed [`Progress`] trait object.
pub type ProgressBox = Progress_TO<'static, RBox<()>>;

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn report(&self, _stage: RStr<'_>, _done: u64, _total: u64) {}
}

impl NoProgress {
    /// A boxed [`NoProgress`].
    pub fn boxed() -> ProgressBox {
        Progress_TO::from_value(NoProgress, abi_stable::sabi_trait::TD_Opaque)
    }
}

/// An ahead-of-time compiler from the graph IR to a serialized, self-contained artifact.
#[sabi_trait]
pub trait Compiler: Send + Sync {
    /// A unique name, e.g. `rbln-npu`.
    fn name(&self) -> RString;
    /// The artifact file extension written by `save_pretrained`, e.g. `rbln`.
    fn artifact_extension(&self) -> RString;
    /// Compiles `graph` for its static input shapes. `options_json` is a JSON object of
    /// compiler options (e.g. `{"npu": "RBLN-CA25"}`); unknown keys are an error.
    fn compile(
        &self,
        graph: GraphBlob,
        options_json: RStr<'_>,
        progress: &ProgressBox,
    ) -> PluginResult<RVec<u8>>;
    /// A human-readable summary of an artifact (graph, shapes, memory plan).
    #[sabi(last_prefix_field)]
    fn inspect(&self, artifact: RSlice<'_, u8>) -> PluginResult<RString>;
    /// Compiles `graph` for its own input shapes and for every set of input shapes in
    /// `extra_shapes` (one shape per graph input, in input order), into one artifact that
    /// holds the packed weights once and a plan per set of shapes; the executable loaded from
    /// it runs inputs of any of those shapes ([`Executable::shapes`]).
    ///
    /// Added after the last prefix field: a compiler built before it compiles only the graph's
    /// own shapes and answers `Unsupported` when `extra_shapes` is not empty.
    fn compile_shapes(
        &self,
        graph: GraphBlob,
        extra_shapes: RVec<RVec<RVec<u64>>>,
        options_json: RStr<'_>,
        progress: &ProgressBox,
    ) -> PluginResult<RVec<u8>> {
        if extra_shapes.is_empty() {
            return self.compile(graph, options_json, progress);
        }
        RResult::RErr(PluginError::unsupported(
            "this compiler compiles one set of input shapes per artifact",
        ))
    }
}

/// A boxed [`Compiler`] trait object.
pub type CompilerBox = Compiler_TO<'static, RBox<()>>;

/// Something that can load compiled artifacts and run them.
#[sabi_trait]
pub trait Device: Send + Sync {
    /// A unique name, e.g. `rbln-npu`.
    fn name(&self) -> RString;
    /// A one-line description of what actually executes the code (be honest about hardware).
    fn description(&self) -> RString;
    /// Loads an artifact, verifying its version and checksum.
    #[sabi(last_prefix_field)]
    fn load(&self, artifact: RSlice<'_, u8>) -> PluginResult<ExecutableBox>;
    /// Sets up the device set this device object stands for from a JSON object of options (for
    /// rbln-npu `{"ids": [0, 1], "cores": {"0": [0], "1": "1-3"}}`) and returns
    /// [`devices_json`](Device::devices_json). Executables already loaded keep their device.
    ///
    /// Added after the last prefix field (as are the two methods after it): a plugin built
    /// before it answers `Unsupported`.
    fn configure(&self, options_json: RStr<'_>) -> PluginResult<RString> {
        let _ = options_json;
        RResult::RErr(PluginError::unsupported(
            "this device plugin takes no device options",
        ))
    }
    /// The devices an index can name, as a JSON list of objects with at least `id` (rbln-npu adds
    /// `cores`). A plugin without the method has one device, 0.
    fn devices_json(&self) -> RString {
        RString::from(r#"[{"id": 0}]"#)
    }
    /// Loads an artifact to run as `options_json` says: a JSON object with `device` (an index of
    /// [`devices_json`](Device::devices_json)), `timeout` (seconds; a run still going at a step
    /// boundary past it fails with [`PluginError::timeout`]), `profile` (per-step times of every
    /// run, printed and summed into [`Executable::info_json`]) and `label` (names the executable
    /// in messages and profiles); all optional.
    fn load_with(
        &self,
        artifact: RSlice<'_, u8>,
        options_json: RStr<'_>,
    ) -> PluginResult<ExecutableBox> {
        let _ = (artifact, options_json);
        RResult::RErr(PluginError::unsupported(
            "this device plugin takes no load options (device, timeout, profile)",
        ))
    }
}

/// A boxed [`Device`] trait object.
pub type DeviceBox = Device_TO<'static, RBox<()>>;

/// A loaded, ready-to-run compiled graph. `run` may be called from several threads.
#[sabi_trait]
pub trait Executable: Send + Sync {
    /// The graph's inputs, in order.
    fn inputs(&self) -> RVec<TensorSpec>;
    /// The graph's outputs, in order.
    fn outputs(&self) -> RVec<TensorSpec>;
    /// Runs the graph. Inputs are matched by name and must have exactly the shapes of one of
    /// the compiled plans ([`shapes`](Self::shapes)).
    #[sabi(last_prefix_field)]
    fn run(&self, inputs: RVec<NamedTensor>) -> PluginResult<RVec<NamedTensor>>;
    /// Where and how it runs, as a JSON object (rbln-npu: `device`, `cores`,
    /// `thread_affinities`, `last_run_affinity`, `timeout_s`, `profile`). Added after the last
    /// prefix field: `{}` from a plugin built before it.
    fn info_json(&self) -> RString {
        RString::from("{}")
    }
    /// [`run`](Executable::run) with this run's options, a JSON object: `timeout` (seconds,
    /// replacing the one it was loaded with) and `any_shape` (`true`: inputs of any shape the
    /// graph accepts; a shape no compiled plan has is planned on first use from the stored
    /// weights and the plan cached). Added after the last prefix field: a plugin built before
    /// it answers `Unsupported`.
    fn run_with(
        &self,
        inputs: RVec<NamedTensor>,
        options_json: RStr<'_>,
    ) -> PluginResult<RVec<NamedTensor>> {
        let _ = (inputs, options_json);
        RResult::RErr(PluginError::unsupported(
            "this device plugin takes no run options (timeout, any_shape)",
        ))
    }
    /// The input signatures of every plan compiled into the artifact (one per set of input
    /// shapes, [`inputs`](Self::inputs) first).
    ///
    /// Added after the last prefix field: an executable built before it has one plan.
    fn shapes(&self) -> RVec<RVec<TensorSpec>> {
        RVec::from(vec![self.inputs()])
    }
}

/// A boxed [`Executable`] trait object.
pub type ExecutableBox = Executable_TO<'static, RBox<()>>;

/// Whether `from_pretrained` compiles.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// Always compile from a source checkpoint.
    Yes,
    /// Load an already compiled directory; never compile.
    No,
    /// Load if the directory holds compiled artifacts and `rbln_config.json`, else compile.
    Auto,
}

/// The compiler and device a model compiles with and runs on.
#[repr(C)]
#[derive(StableAbi)]
pub struct Backend {
    /// Compiles the model's graphs.
    pub compiler: CompilerBox,
    /// Runs them.
    pub device: DeviceBox,
}

/// One callable method of a loaded model, with its static signature.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct MethodSpec {
    /// e.g. `encode`, `decode`.
    pub name: RString,
    /// Inputs, in order.
    pub inputs: RVec<TensorSpec>,
    /// Outputs, in order.
    pub outputs: RVec<TensorSpec>,
}

/// A model family a plugin provides, e.g. `RBLNAutoencoderKL`.
#[sabi_trait]
pub trait ModelClass: Send + Sync {
    /// The class name, e.g. `RBLNAutoencoderKL`.
    fn name(&self) -> RString;
    /// Returns true if `dir` holds a compiled model of this class (`rbln_config.json` with a
    /// matching `cls_name`).
    fn is_compiled_dir(&self, dir: RStr<'_>) -> bool;
    /// Loads a model from a local directory, compiling it when `export` says so.
    ///
    /// `rbln_config_json` is a JSON object of config fields (may be `{}`); `rbln_kwargs_json` is
    /// a JSON object of `rbln_*`-style overrides (keys without the `rbln_` prefix) that win over
    /// `rbln_config_json` and over a stored config's runtime options.
    #[sabi(last_prefix_field)]
    fn from_pretrained(
        &self,
        model_id: RStr<'_>,
        export: Export,
        rbln_config_json: RStr<'_>,
        rbln_kwargs_json: RStr<'_>,
        backend: Backend,
        progress: &ProgressBox,
    ) -> PluginResult<ModelBox>;
    /// What hosts and pipelines need to know of the model in `dir` (a source or compiled
    /// directory), read from the model's own files so that the host never parses them: a JSON
    /// object with `in_channels`, `vae_scale_factor`, `scaling_factor`, `shift_factor`,
    /// `latents_mean`, `latents_std` and `force_upcast` (`null` where the model has none).
    ///
    /// Added after the last prefix field: a plugin built before it answers `Unsupported`.
    fn describe_dir(&self, dir: RStr<'_>) -> PluginResult<RString> {
        let _ = dir;
        RResult::RErr(PluginError::unsupported(
            "this model class does not describe model directories",
        ))
    }
}

/// A boxed [`ModelClass`] trait object.
pub type ModelClassBox = ModelClass_TO<'static, RBox<()>>;

/// A loaded (compiled) model instance.
#[sabi_trait]
pub trait Model: Send + Sync {
    /// The class name, e.g. `RBLNAutoencoderKL`.
    fn class_name(&self) -> RString;
    /// The effective config, exactly as `save_pretrained` writes `rbln_config.json`.
    fn rbln_config_json(&self) -> RString;
    /// The methods this instance can run (e.g. no `encode` when compiled decoder-only).
    fn methods(&self) -> RVec<MethodSpec>;
    /// Runs a method. `options_json` is a JSON object of per-call options (e.g. `{"seed": 0}`).
    fn call(
        &self,
        method: RStr<'_>,
        inputs: RVec<NamedTensor>,
        options_json: RStr<'_>,
    ) -> PluginResult<RVec<NamedTensor>>;
    /// Writes the compiled model to `dir` atomically (temporary sibling + rename).
    #[sabi(last_prefix_field)]
    fn save_pretrained(&self, dir: RStr<'_>) -> PluginResult<()>;
    /// How the model runs, as a JSON object: for rbln-vae `parts` (each part's device(s) with
    /// their [`Executable::info_json`]), `timeout` and `activate_profiler`. Added after the last
    /// prefix field: `{}` from a plugin built before it.
    fn runtime_json(&self) -> RString {
        RString::from("{}")
    }
}

/// A boxed [`Model`] trait object.
pub type ModelBox = Model_TO<'static, RBox<()>>;
