//! A loaded artifact, ready to run from any number of threads.

use super::control::{run_steps, RunOptions};
use super::Sources;
use crate::artifact;
use crate::kernels::buffers;
use crate::program::{Loc, Program};
use plugin_api::tensor::shape_str;
use plugin_api::{NamedTensor, PluginError, Tensor, TensorSpec};
use std::sync::{Arc, Mutex};

/// An arena and a workspace for one run.
type Buffers = (Vec<f32>, Vec<f32>);

/// An executable: the verified plan and weights, shared immutably. Every concurrent
/// [`run`](Self::run) takes its own arena and workspace from a pool (allocated on first use and
/// kept for later runs, so that steady-state runs allocate nothing large).
#[derive(Debug, Clone)]
pub struct NpuExecutable {
    program: Arc<Program>,
    pool: Arc<Mutex<Vec<Buffers>>>,
    /// Device, timeout and profile ([`NpuExecutable::load_with`]).
    opts: Arc<RunOptions>,
}

impl Drop for NpuExecutable {
    /// When this is the last clone: frees the pooled arenas and the weights now, then hands the
    /// freed memory back to the operating system.
    fn drop(&mut self) {
        if Arc::strong_count(&self.pool) > 1 {
            return;
        }
        if let Ok(mut pool) = self.pool.lock() {
            pool.clear();
        }
        if let Some(p) = Arc::get_mut(&mut self.program) {
            p.weights = Vec::new();
        }
        buffers::release_free_memory();
    }
}

impl NpuExecutable {
    /// Verifies and loads artifact bytes (see [`artifact::decode`]), and checks that a run fits
    /// in the memory budget ([`Program::check_footprint`]).
    pub fn load(bytes: &[u8]) -> Result<NpuExecutable, PluginError> {
        Self::load_with(bytes, RunOptions::default())
    }

    /// [`load`](Self::load), to run as `opts` say (on a device's pool, with a timeout, profiled).
    pub fn load_with(bytes: &[u8], opts: RunOptions) -> Result<NpuExecutable, PluginError> {
        crate::kernels::isa::checked()?;
        let program = artifact::decode(bytes)?;
        program.check_footprint()?;
        Ok(NpuExecutable {
            program: Arc::new(program),
            pool: Arc::default(),
            opts: Arc::new(opts),
        })
    }

    /// Where and how it runs (device, cores, timeout, profile totals), as a JSON object.
    pub fn info_json(&self) -> serde_json::Value {
        self.opts.to_json(&self.program)
    }

    /// The loaded plan.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Input signatures, in order.
    pub fn input_specs(&self) -> Vec<TensorSpec> {
        self.program
            .inputs
            .iter()
            .map(|i| TensorSpec::f32(i.name.clone(), &i.shape))
            .collect()
    }

    /// Output signatures, in order.
    pub fn output_specs(&self) -> Vec<TensorSpec> {
        self.program
            .outputs
            .iter()
            .map(|o| TensorSpec::f32(o.name.clone(), &self.program.values[o.value].shape))
            .collect()
    }

    /// Runs the program. Inputs are matched by name and must have exactly the compiled shapes;
    /// outputs come back in graph order with their graph names.
    pub fn run(&self, inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>, PluginError> {
        self.run_limited(inputs, self.opts.timeout)
    }

    /// [`run`](Self::run) with run options `{"timeout": seconds}` (replacing the load-time one).
    pub fn run_with(
        &self,
        inputs: &[NamedTensor],
        options_json: &str,
    ) -> Result<Vec<NamedTensor>, PluginError> {
        let timeout = RunOptions::run_timeout(options_json)?.or(self.opts.timeout);
        self.run_limited(inputs, timeout)
    }

    fn run_limited(
        &self,
        inputs: &[NamedTensor],
        timeout: Option<std::time::Duration>,
    ) -> Result<Vec<NamedTensor>, PluginError> {
        let start = std::time::Instant::now();
        let p = &*self.program;
        let names = || {
            p.inputs
                .iter()
                .map(|i| format!("'{}' {}", i.name, shape_str(&i.shape)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut bound: Vec<Option<&[f32]>> = vec![None; p.inputs.len()];
        for t in inputs {
            let name = t.name.as_str();
            let Some(i) = p.inputs.iter().position(|d| d.name == name) else {
                return Err(PluginError::invalid(format!(
                    "graph '{}': unexpected input '{name}' (expected inputs: {})",
                    p.name,
                    names()
                )));
            };
            if bound[i].is_some() {
                return Err(PluginError::invalid(format!(
                    "graph '{}': input '{name}' was given twice",
                    p.name
                )));
            }
            let given = t.tensor.shape();
            if given != p.inputs[i].shape {
                return Err(PluginError::invalid(format!(
                    "graph '{}': input '{name}' has shape {}, expected {}",
                    p.name,
                    shape_str(&given),
                    shape_str(&p.inputs[i].shape)
                )));
            }
            bound[i] = Some(t.tensor.data());
        }
        let inputs: Vec<&[f32]> = bound
            .into_iter()
            .zip(&p.inputs)
            .map(|(b, d)| {
                b.ok_or_else(|| {
                    PluginError::invalid(format!(
                        "graph '{}': missing input '{}' of shape {}",
                        p.name,
                        d.name,
                        shape_str(&d.shape)
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let mem = p
            .memory
            .as_ref()
            .expect("loaded programs have a memory plan");
        let pooled = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        let (mut arena, mut workspace) = pooled.unwrap_or_else(|| {
            (
                buffers::zeroed(mem.arena_len),
                buffers::zeroed(p.workspace_len()),
            )
        });
        let src = Sources {
            inputs: &inputs,
            program: p,
        };
        let ran = run_steps(
            &src,
            &mut arena,
            &mut workspace,
            &self.opts,
            (start, timeout),
        );
        if let Err(e) = ran {
            // A run stopped at a step boundary leaves the arena reusable as it is.
            if let Ok(mut pool) = self.pool.lock() {
                pool.push((arena, workspace));
            }
            return Err(e);
        }
        let outputs = p
            .outputs
            .iter()
            .map(|o| {
                let data = match mem.locs[o.value] {
                    Loc::Input(i) => inputs[i].to_vec(),
                    Loc::Weight(w) => p.weights[w].data.clone(),
                    Loc::Arena { offset, len } => arena[offset..offset + len].to_vec(),
                };
                Tensor::new(p.values[o.value].shape.clone(), data)
                    .map(|t| NamedTensor::new(o.name.clone(), t))
            })
            .collect();
        if let Ok(mut pool) = self.pool.lock() {
            pool.push((arena, workspace));
        }
        outputs
    }
}
