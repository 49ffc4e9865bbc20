//! The compiled program: an immutable, serializable plan (schedule of steps, value shapes,
//! weight layouts, arena offsets) shared by every run of an executable.
//!
//! This module and its children are the IR that the compiler writes and the runtime reads; they
//! depend on neither. [`validate`](Program::validate) checks every invariant the runtime relies
//! on, [`liveness`] models the memory of a schedule (what the planner optimizes and the checker
//! verifies) and [`ops`] says which ops this build's kernels run and which run in place.

pub mod footprint;
pub mod liveness;
pub mod ops;
mod validate;

use crate::kernels::winograd;
use plugin_api::graph::{Activation, Op};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Index into [`Program::values`].
pub type ValueId = usize;

/// Compile-time target options, recorded in the artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Target NPU name (e.g. `RBLN-CA25`), informational only: execution is on the host CPU.
    pub npu: Option<String>,
    /// Requested device count, informational only.
    pub num_devices: Option<u32>,
    /// Whether 3x3 stride-1 convolutions may use the Winograd kernel (compiler option
    /// `winograd`, default on).
    #[serde(default = "yes")]
    pub winograd: bool,
    /// The most memory, in bytes, one run may need (compiler option `memory_budget`; default:
    /// [`footprint::default_budget`]). Checked when compiling and when loading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget: Option<u64>,
}

fn yes() -> bool {
    true
}

impl Default for Target {
    fn default() -> Target {
        Target {
            npu: None,
            num_devices: None,
            winograd: true,
            memory_budget: None,
        }
    }
}

/// A named graph input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorDesc {
    /// Name used when calling.
    pub name: String,
    /// Static shape.
    pub shape: Vec<usize>,
}

/// A named graph output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputDesc {
    /// Name returned to the caller.
    pub name: String,
    /// The value returned.
    pub value: ValueId,
}

/// Where a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Def {
    /// `inputs[i]`.
    Input(usize),
    /// `weights[i]`.
    Weight(usize),
    /// The output of `steps[i]`.
    Step(usize),
}

/// One tensor value of the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// Logical shape (packed weights keep their logical shape).
    pub shape: Vec<usize>,
    /// Producer.
    pub def: Def,
}

impl Value {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Storage layout of a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Row-major, as in the checkpoint.
    Plain,
    /// A `rows x depth` matrix packed into GEMM panels of `mr` rows (see [`pack_a`](crate::kernels::gemm::pack_a)).
    PackedA {
        /// Rows (output channels / features).
        rows: usize,
        /// Depth (`C_in * KH * KW` or input features).
        depth: usize,
        /// Panel height; must equal this build's [`MR`](crate::kernels::gemm::MR).
        mr: usize,
    },
    /// A `[rows, c_in, 3, 3]` convolution weight in the taps layout of the Winograd kernel (see
    /// [`winograd::pack_taps`]); its filter transform runs per call into a workspace.
    WinogradTaps {
        /// Output channels.
        rows: usize,
        /// Input channels.
        c_in: usize,
        /// Panel height; must equal this build's [`MR`](crate::kernels::gemm::MR).
        mr: usize,
    },
    /// A `[rows, c_in, 3, 3]` convolution weight stored as the Winograd kernel's transformed
    /// filters U (see [`winograd::transform_filters`]), 4x the size of the weight: for layers
    /// with few tiles, where the per-call transform would cost a large share of the layer.
    WinogradFilters {
        /// Output channels.
        rows: usize,
        /// Input channels.
        c_in: usize,
        /// Panel height; must equal this build's [`MR`](crate::kernels::gemm::MR).
        mr: usize,
    },
}

impl Layout {
    /// Whether the Winograd kernel reads this layout (taps or transformed filters).
    pub fn is_winograd(&self) -> bool {
        matches!(
            self,
            Layout::WinogradTaps { .. } | Layout::WinogradFilters { .. }
        )
    }
}

/// The kernel a step runs with, chosen by the compiler. Only convolutions have a choice; every
/// other op keeps the default and runs its one kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algo {
    /// GEMM-based: a convolution runs as a GEMM over its im2col matrix (gathered panel by panel,
    /// never materialized), a linear layer as a GEMM (over a [`Layout::PackedA`] or plain weight).
    /// Serialized as `Direct`, its name in artifacts of format version 3.
    #[default]
    #[serde(rename = "Direct")]
    Gemm,
    /// Winograd F(4x4, 3x3) (3x3 stride-1 convolutions with a [`Layout::WinogradTaps`] or
    /// [`Layout::WinogradFilters`] weight).
    WinogradF4,
}

/// A constant tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weight {
    /// The checkpoint key it came from.
    pub name: String,
    /// Storage layout.
    pub layout: Layout,
    /// Stored floats.
    pub len: usize,
    /// The floats (stored after the plan in the artifact, not in its JSON), shared by every
    /// plan of a multi-shape artifact.
    #[serde(skip)]
    pub data: Arc<Vec<f32>>,
}

/// What a step reads an operand for (see [`Step::slot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The tensor the op transforms: its first operand (`x` of a convolution or linear layer).
    /// With [`Step::upsample_input`] it is read through a nearest-neighbour 2x upsampling.
    Input,
    /// The weight of a convolution (`[C_out, C_in, KH, KW]`) or linear layer (`[out, in]`).
    Weight,
    /// The optional bias of a convolution or linear layer (`[C_out]`).
    Bias,
    /// The tensor added to the result in the kernel's epilogue ([`Step::residual`]).
    Residual,
}

/// One scheduled operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StepRecord", into = "StepRecord")]
pub struct Step {
    /// Node name from the graph.
    pub name: String,
    /// The operation.
    pub op: Op,
    /// The op's operands in the graph IR's order (a convolution's `[x, w]` or `[x, w, bias]`);
    /// name them with [`Step::slot`] / [`Step::operand`].
    pub inputs: Vec<ValueId>,
    /// Result.
    pub output: ValueId,
    /// Activation applied to the result in place (set by fusion passes).
    pub activation: Option<Activation>,
    /// The kernel (set by the `SelectWinograd` pass).
    pub algo: Algo,
    /// The step reads its [`Role::Input`] through a nearest-neighbour 2x upsampling, folded into
    /// its input indexing by the `FoldUpsample` pass (Winograd convolutions only): the operand is
    /// the low-resolution tensor and the op sees it at twice its height and width.
    pub upsample_input: bool,
    /// A tensor of the output's shape added to the result in the kernel's epilogue (set by the
    /// `FuseResidualAdd` pass; Winograd convolutions only).
    pub residual: Option<ValueId>,
}

impl Step {
    /// Every value the step reads, by read slot: its [`inputs`](Self::inputs), then the
    /// residual. [`Program::uses`] and the runtime number operands this way.
    pub fn reads(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.inputs.iter().copied().chain(self.residual)
    }

    /// The read slot (an index into [`reads`](Self::reads)) of the operand playing `role`, if
    /// the step has one.
    pub fn slot(&self, role: Role) -> Option<usize> {
        let n = self.inputs.len();
        let weighted = matches!(self.op, Op::Conv2d(_) | Op::Linear);
        match role {
            Role::Input => (n > 0).then_some(0),
            Role::Weight => (weighted && n > 1).then_some(1),
            Role::Bias => (weighted && n > 2).then_some(2),
            Role::Residual => self.residual.map(|_| n),
        }
    }

    /// The value playing `role`, if the step has one.
    pub fn operand(&self, role: Role) -> Option<ValueId> {
        self.slot(role).and_then(|k| self.reads().nth(k))
    }

    /// Replaces the value read in `slot` (see [`reads`](Self::reads)).
    pub fn set_read(&mut self, slot: usize, v: ValueId) {
        match self.inputs.get_mut(slot) {
            Some(u) => *u = v,
            None => {
                assert!(
                    slot == self.inputs.len() && self.residual.is_some(),
                    "set_read: step '{}' has no read slot {slot}",
                    self.name
                );
                self.residual = Some(v);
            }
        }
    }
}

/// A step as serialized (artifact format version 3): the residual, if any, is the last of the
/// operands and `residual` flags it.
#[derive(Serialize, Deserialize)]
struct StepRecord {
    name: String,
    op: Op,
    inputs: Vec<ValueId>,
    output: ValueId,
    activation: Option<Activation>,
    #[serde(default)]
    algo: Algo,
    #[serde(default)]
    upsample_input: bool,
    #[serde(default)]
    residual: bool,
}

impl TryFrom<StepRecord> for Step {
    type Error = String;
    fn try_from(r: StepRecord) -> Result<Step, String> {
        let mut inputs = r.inputs;
        let residual = match r.residual {
            true => Some(
                inputs
                    .pop()
                    .ok_or_else(|| format!("step '{}' has a residual but no operands", r.name))?,
            ),
            false => None,
        };
        Ok(Step {
            name: r.name,
            op: r.op,
            inputs,
            output: r.output,
            activation: r.activation,
            algo: r.algo,
            upsample_input: r.upsample_input,
            residual,
        })
    }
}

impl From<Step> for StepRecord {
    fn from(s: Step) -> StepRecord {
        let mut inputs = s.inputs;
        inputs.extend(s.residual);
        StepRecord {
            name: s.name,
            op: s.op,
            inputs,
            output: s.output,
            activation: s.activation,
            algo: s.algo,
            upsample_input: s.upsample_input,
            residual: s.residual.is_some(),
        }
    }
}

/// Where a value lives at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Loc {
    /// The caller's input tensor `i`.
    Input(usize),
    /// Weight `i`.
    Weight(usize),
    /// `len` floats at `offset` of the per-call arena.
    Arena {
        /// First float.
        offset: usize,
        /// Number of floats.
        len: usize,
    },
}

/// The static memory plan: one location per value and the arena size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryPlan {
    /// Floats in the per-call arena (peak activation memory).
    pub arena_len: usize,
    /// Location of each value, indexed by [`ValueId`].
    pub locs: Vec<Loc>,
}

/// A compiled program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    /// Graph name (e.g. `decoder`).
    pub name: String,
    /// Target options.
    pub target: Target,
    /// Inputs in call order.
    pub inputs: Vec<TensorDesc>,
    /// Outputs in return order.
    pub outputs: Vec<OutputDesc>,
    /// All values.
    pub values: Vec<Value>,
    /// All constants.
    pub weights: Vec<Weight>,
    /// The schedule, in execution order.
    pub steps: Vec<Step>,
    /// Set by the `PlanMemory` pass.
    pub memory: Option<MemoryPlan>,
}

impl Program {
    /// Steps reading each value, as `(step, read slot)` (see [`Step::reads`]).
    pub fn uses(&self) -> Vec<Vec<(usize, usize)>> {
        let mut uses = vec![Vec::new(); self.values.len()];
        for (s, step) in self.steps.iter().enumerate() {
            for (slot, v) in step.reads().enumerate() {
                if v < uses.len() {
                    uses[v].push((s, slot));
                }
            }
        }
        uses
    }

    /// Floats of per-call workspace the widest step needs besides the arena (the transformed
    /// filters of the largest Winograd convolution whose filters are transformed per call).
    pub fn workspace_len(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.algo == Algo::WinogradF4 && !self.stores_winograd_filters(s))
            .filter_map(|s| {
                let w = &self.values.get(s.operand(Role::Weight)?)?.shape;
                (w.len() == 4).then(|| winograd::transformed_len(w[0], w[1]))
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether the Winograd step `step` reads transformed filters stored at compile time
    /// ([`Layout::WinogradFilters`]) rather than taps it transforms per call.
    pub fn stores_winograd_filters(&self, step: &Step) -> bool {
        step.operand(Role::Weight)
            .and_then(|v| self.values.get(v))
            .is_some_and(|v| matches!(v.def, Def::Weight(w)
                if self.weights.get(w).is_some_and(|w| matches!(w.layout, Layout::WinogradFilters { .. }))))
    }

    /// Whether `v` is returned to the caller.
    pub fn is_output(&self, v: ValueId) -> bool {
        self.outputs.iter().any(|o| o.value == v)
    }

    /// A new constant value of `shape` holding `data` in `layout`.
    pub fn add_weight(
        &mut self,
        name: String,
        shape: Vec<usize>,
        layout: Layout,
        data: Vec<f32>,
    ) -> ValueId {
        self.weights.push(Weight {
            name,
            layout,
            len: data.len(),
            data: Arc::new(data),
        });
        self.values.push(Value {
            shape,
            def: Def::Weight(self.weights.len() - 1),
        });
        self.values.len() - 1
    }

    /// Stores constant value `v` as `data` in `layout`: in place when nothing else reads it
    /// (`in_place`), else as a new value (named `<name>#<suffix>`) that is returned.
    pub fn relayout_weight(
        &mut self,
        v: ValueId,
        data: Vec<f32>,
        layout: Layout,
        in_place: bool,
        suffix: &str,
    ) -> ValueId {
        let Def::Weight(w) = self.values[v].def else {
            panic!("relayout_weight: value {v} is not a constant")
        };
        if in_place {
            let wt = &mut self.weights[w];
            wt.len = data.len();
            wt.data = Arc::new(data);
            wt.layout = layout;
            return v;
        }
        let name = format!("{}#{suffix}", self.weights[w].name);
        self.add_weight(name, self.values[v].shape.clone(), layout, data)
    }

    /// Removes the steps marked in `remove`, then [`compact`](Self::compact)s.
    pub fn remove_steps(&mut self, remove: &[bool]) {
        let mut i = 0;
        self.steps.retain(|_| {
            i += 1;
            !remove[i - 1]
        });
        self.compact();
    }

    /// Puts the steps in the order `order` (a permutation of the step indices: new step `i` is
    /// old step `order[i]`), then [`compact`](Self::compact)s, which re-derives the step
    /// definitions. The caller keeps the order topological.
    pub fn reorder_steps(&mut self, order: &[usize]) {
        assert_eq!(
            order.len(),
            self.steps.len(),
            "reorder_steps: not a permutation"
        );
        let mut old: Vec<Option<Step>> = std::mem::take(&mut self.steps)
            .into_iter()
            .map(Some)
            .collect();
        self.steps = order
            .iter()
            .map(|&i| old[i].take().expect("reorder_steps: not a permutation"))
            .collect();
        self.compact();
    }

    /// Drops values and weights nothing refers to any more, renumbers, and re-derives step
    /// definitions. Clears the memory plan.
    pub fn compact(&mut self) {
        let mut step_def = vec![None; self.values.len()];
        for (i, s) in self.steps.iter().enumerate() {
            step_def[s.output] = Some(i);
        }
        let mut keep = vec![false; self.values.len()];
        for (v, val) in self.values.iter().enumerate() {
            keep[v] = matches!(val.def, Def::Input(_)) || step_def[v].is_some();
        }
        let uses = self.uses();
        for (v, val) in self.values.iter().enumerate() {
            if matches!(val.def, Def::Weight(_)) {
                keep[v] = !uses[v].is_empty() || self.is_output(v);
            }
        }
        let mut remap = vec![usize::MAX; self.values.len()];
        let mut wremap = vec![usize::MAX; self.weights.len()];
        let (mut values, mut weights) = (Vec::new(), Vec::new());
        let old_weights = std::mem::take(&mut self.weights);
        let mut old_weights: Vec<Option<Weight>> = old_weights.into_iter().map(Some).collect();
        for (v, mut val) in std::mem::take(&mut self.values).into_iter().enumerate() {
            if !keep[v] {
                continue;
            }
            match val.def {
                Def::Weight(w) => {
                    if wremap[w] == usize::MAX {
                        wremap[w] = weights.len();
                        weights.push(old_weights[w].take().expect("weight taken once"));
                    }
                    val.def = Def::Weight(wremap[w]);
                }
                Def::Step(_) => val.def = Def::Step(step_def[v].expect("kept step value")),
                Def::Input(_) => {}
            }
            remap[v] = values.len();
            values.push(val);
        }
        for s in &mut self.steps {
            s.inputs.iter_mut().for_each(|v| *v = remap[*v]);
            s.residual = s.residual.map(|v| remap[v]);
            s.output = remap[s.output];
        }
        self.outputs
            .iter_mut()
            .for_each(|o| o.value = remap[o.value]);
        self.values = values;
        self.weights = weights;
        self.memory = None;
    }
}
