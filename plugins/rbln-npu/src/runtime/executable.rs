//! A loaded artifact, ready to run from any number of threads.

use super::control::{run_steps, RunOptions};
use super::Sources;
use crate::artifact;
use crate::compiler::replan::replan;
use crate::kernels::buffers;
use crate::program::{Loc, Program};
use plugin_api::tensor::shape_str;
use plugin_api::{NamedTensor, PluginError, Tensor, TensorSpec};
use std::sync::{Arc, Mutex};

/// An arena and a workspace for one run.
type Buffers = (Vec<f32>, Vec<f32>);

/// At most this many plans derived on first use are kept (beyond it, a new shape is planned
/// for its run and dropped).
pub const MAX_DERIVED_PLANS: usize = 64;

/// The plans of one graph: those compiled into the artifact (all reading one copy of the
/// weights) and those derived on first use from the first of them.
#[derive(Debug)]
struct Plans {
    compiled: Vec<Arc<Program>>,
    derived: Mutex<Vec<Arc<Program>>>,
}

/// An executable: the verified plans and weights, shared immutably. Every concurrent
/// [`run`](Self::run) takes its own arena and workspace from a pool (allocated on first use,
/// grown to the largest plan run so far, and kept for later runs of any shape, so that
/// steady-state runs allocate nothing large and memory does not grow with the number of shapes).
#[derive(Debug, Clone)]
pub struct NpuExecutable {
    plans: Arc<Plans>,
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
        if let Some(p) = Arc::get_mut(&mut self.plans) {
            p.compiled.clear();
            if let Ok(d) = p.derived.get_mut() {
                d.clear();
            }
        }
        buffers::release_free_memory();
    }
}

/// Formats the input shapes of a plan as `'z' [1, 4, 8, 8]`.
fn plan_inputs(p: &Program) -> String {
    p.inputs
        .iter()
        .map(|i| format!("'{}' {}", i.name, shape_str(&i.shape)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl NpuExecutable {
    /// Verifies and loads artifact bytes (see [`artifact::decode_plans`]), and checks that a run
    /// of every plan fits in the memory budget ([`Program::check_footprint`]: the weights once,
    /// plus that plan's arena and workspace).
    pub fn load(bytes: &[u8]) -> Result<NpuExecutable, PluginError> {
        Self::load_with(bytes, RunOptions::default())
    }

    /// [`load`](Self::load), to run as `opts` say (on a device's pool, with a timeout, profiled).
    pub fn load_with(bytes: &[u8], opts: RunOptions) -> Result<NpuExecutable, PluginError> {
        crate::kernels::isa::checked()?;
        let plans = artifact::decode_plans(bytes)?;
        for p in &plans {
            p.check_footprint()?;
        }
        Ok(NpuExecutable {
            plans: Arc::new(Plans {
                compiled: plans.into_iter().map(Arc::new).collect(),
                derived: Mutex::default(),
            }),
            pool: Arc::default(),
            opts: Arc::new(opts),
        })
    }

    /// Where and how it runs (device, cores, timeout, profile totals), as a JSON object.
    pub fn info_json(&self) -> serde_json::Value {
        self.opts.to_json(self.program())
    }

    /// The first compiled plan.
    pub fn program(&self) -> &Program {
        &self.plans.compiled[0]
    }

    /// Every compiled plan, in artifact order.
    pub fn programs(&self) -> impl Iterator<Item = &Program> {
        self.plans.compiled.iter().map(|p| &**p)
    }

    /// Input signatures of the first plan, in order.
    pub fn input_specs(&self) -> Vec<TensorSpec> {
        Self::specs_of(self.program())
    }

    /// Input signatures of every compiled plan, in artifact order.
    pub fn shape_specs(&self) -> Vec<Vec<TensorSpec>> {
        self.programs().map(Self::specs_of).collect()
    }

    fn specs_of(p: &Program) -> Vec<TensorSpec> {
        p.inputs
            .iter()
            .map(|i| TensorSpec::f32(i.name.clone(), &i.shape))
            .collect()
    }

    /// Output signatures of the first plan, in order.
    pub fn output_specs(&self) -> Vec<TensorSpec> {
        let p = self.program();
        p.outputs
            .iter()
            .map(|o| TensorSpec::f32(o.name.clone(), &p.values[o.value].shape))
            .collect()
    }

    /// The shapes of `inputs` in graph input order, checking names (unknown, repeated or
    /// missing inputs are errors).
    fn bind<'t>(&self, inputs: &'t [NamedTensor]) -> Result<Vec<&'t Tensor>, PluginError> {
        let p = self.program();
        let mut bound: Vec<Option<&Tensor>> = vec![None; p.inputs.len()];
        for t in inputs {
            let name = t.name.as_str();
            let Some(i) = p.inputs.iter().position(|d| d.name == name) else {
                return Err(PluginError::invalid(format!(
                    "graph '{}': unexpected input '{name}' (expected inputs: {})",
                    p.name,
                    plan_inputs(p)
                )));
            };
            if bound[i].is_some() {
                return Err(PluginError::invalid(format!(
                    "graph '{}': input '{name}' was given twice",
                    p.name
                )));
            }
            bound[i] = Some(&t.tensor);
        }
        bound
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
            .collect()
    }

    /// The plan for inputs of `shapes`: a compiled one, else (with `derive`) one derived before
    /// or now ([`replan`]), else an error listing the compiled shapes.
    fn plan_for(&self, shapes: &[Vec<usize>], derive: bool) -> Result<Arc<Program>, PluginError> {
        let fits = |p: &Program| p.inputs.iter().zip(shapes).all(|(i, s)| i.shape == *s);
        if let Some(p) = self.plans.compiled.iter().find(|p| fits(p)) {
            return Ok(Arc::clone(p));
        }
        let first = &self.plans.compiled[0];
        if !derive {
            let wrong = first
                .inputs
                .iter()
                .zip(shapes)
                .find(|(i, s)| i.shape != **s)
                .map_or(String::new(), |(i, s)| {
                    format!("input '{}' has shape {}", i.name, shape_str(s))
                });
            let compiled = self
                .programs()
                .map(|p| format!("({})", plan_inputs(p)))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(PluginError::invalid(format!(
                "graph '{}': {wrong}, expected one of the compiled shapes: {compiled}",
                first.name
            )));
        }
        let mut derived = self.plans.derived.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = derived.iter().find(|p| fits(p)) {
            return Ok(Arc::clone(p));
        }
        let p = Arc::new(replan(first, shapes)?);
        if derived.len() < MAX_DERIVED_PLANS {
            derived.push(Arc::clone(&p));
        }
        Ok(p)
    }

    /// Runs a compiled plan: inputs are matched by name and their shapes must be those of one
    /// of the compiled plans; outputs come back in graph order with their graph names.
    pub fn run(&self, inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>, PluginError> {
        self.run_planned(inputs, false, self.opts.timeout)
    }

    /// [`run`](Self::run) for inputs of any shape the graph accepts: a shape no compiled plan
    /// has is planned from the stored weights on first use (without repacking them) and the
    /// plan kept for later runs (up to [`MAX_DERIVED_PLANS`]).
    pub fn run_any(&self, inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>, PluginError> {
        self.run_planned(inputs, true, self.opts.timeout)
    }

    /// [`run`](Self::run) with run options: `timeout` (seconds, replacing the load-time one)
    /// and `any_shape` (`true`: as [`run_any`](Self::run_any)).
    pub fn run_with(
        &self,
        inputs: &[NamedTensor],
        options_json: &str,
    ) -> Result<Vec<NamedTensor>, PluginError> {
        let run = RunOptions::per_run(options_json)?;
        self.run_planned(inputs, run.any_shape, run.timeout.or(self.opts.timeout))
    }

    fn run_planned(
        &self,
        inputs: &[NamedTensor],
        derive: bool,
        timeout: Option<std::time::Duration>,
    ) -> Result<Vec<NamedTensor>, PluginError> {
        let start = std::time::Instant::now();
        let bound = self.bind(inputs)?;
        let shapes: Vec<Vec<usize>> = bound.iter().map(|t| t.shape()).collect();
        let plan = self.plan_for(&shapes, derive)?;
        let p = &*plan;
        let inputs: Vec<&[f32]> = bound.iter().map(|t| t.data()).collect();
        let mem = p
            .memory
            .as_ref()
            .expect("loaded programs have a memory plan");
        let pooled = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        let (mut arena, mut workspace) = pooled.unwrap_or_default();
        if arena.len() < mem.arena_len {
            arena = buffers::zeroed(mem.arena_len);
        }
        if workspace.len() < p.workspace_len() {
            workspace = buffers::zeroed(p.workspace_len());
        }
        let src = Sources {
            inputs: &inputs,
            program: p,
        };
        let ran = run_steps(
            &src,
            &mut arena[..mem.arena_len],
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
                    Loc::Weight(w) => p.weights[w].data.to_vec(),
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
