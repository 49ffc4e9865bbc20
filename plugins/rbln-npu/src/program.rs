//! The compiled program: an immutable, serializable plan (schedule of steps, value shapes,
//! weight layouts, arena offsets) shared by every run of an executable.

use crate::compiler::memory_plan;
use crate::kernels::{gemm, winograd};
use plugin_api::graph::{infer_node_shape, Activation, Op};
use plugin_api::tensor::shape_str;
use serde::{Deserialize, Serialize};

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
    /// A `rows x depth` matrix packed into GEMM panels of `mr` rows (see [`gemm::pack_a`]).
    PackedA {
        /// Rows (output channels / features).
        rows: usize,
        /// Depth (`C_in * KH * KW` or input features).
        depth: usize,
        /// Panel height; must equal this build's [`gemm::MR`].
        mr: usize,
    },
    /// A `[rows, c_in, 3, 3]` convolution weight in the taps layout of the Winograd kernel (see
    /// [`winograd::pack_taps`]); its filter transform runs per call into a workspace.
    WinogradTaps {
        /// Output channels.
        rows: usize,
        /// Input channels.
        c_in: usize,
        /// Panel height; must equal this build's [`gemm::MR`].
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
        /// Panel height; must equal this build's [`gemm::MR`].
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

/// The kernel a step runs with, chosen by the compiler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algo {
    /// The op's general kernel (for convolutions: im2col GEMM).
    #[default]
    Direct,
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
    /// The floats (stored after the plan in the artifact, not in its JSON).
    #[serde(skip)]
    pub data: Vec<f32>,
}

/// One scheduled operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Node name from the graph.
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Operands.
    pub inputs: Vec<ValueId>,
    /// Result.
    pub output: ValueId,
    /// Activation applied to the result in place (set by fusion passes).
    pub activation: Option<Activation>,
    /// The kernel (set by the `SelectWinograd` pass).
    #[serde(default)]
    pub algo: Algo,
    /// The step reads operand 0 through a nearest-neighbour 2x upsampling, folded into its
    /// input indexing by the `FoldUpsample` pass (Winograd convolutions only): operand 0 is the
    /// low-resolution tensor and the op sees it at twice its height and width.
    #[serde(default)]
    pub upsample_input: bool,
    /// The step's last operand is added to its result in the kernel's epilogue (set by the
    /// `FuseResidualAdd` pass; Winograd convolutions only).
    #[serde(default)]
    pub residual: bool,
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
    /// Steps reading each value, as `(step, operand slot)`.
    pub fn uses(&self) -> Vec<Vec<(usize, usize)>> {
        let mut uses = vec![Vec::new(); self.values.len()];
        for (s, step) in self.steps.iter().enumerate() {
            for (slot, &v) in step.inputs.iter().enumerate() {
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
                let w = &self.values.get(*s.inputs.get(1)?)?.shape;
                (w.len() == 4).then(|| winograd::transformed_len(w[0], w[1]))
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether the Winograd step `step` reads transformed filters stored at compile time
    /// ([`Layout::WinogradFilters`]) rather than taps it transforms per call.
    pub fn stores_winograd_filters(&self, step: &Step) -> bool {
        step.inputs
            .get(1)
            .and_then(|&v| self.values.get(v))
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
            data,
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
            wt.data = data;
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
            s.output = remap[s.output];
        }
        self.outputs
            .iter_mut()
            .for_each(|o| o.value = remap[o.value]);
        self.values = values;
        self.weights = weights;
        self.memory = None;
    }

    /// Checks every invariant the runtime relies on: ids in range, topological order, shapes
    /// (re-running the IR's shape rules), weight layouts and lengths, and, if present, that the
    /// memory plan never places two simultaneously live values in overlapping memory.
    pub fn validate(&self) -> Result<(), String> {
        let nv = self.values.len();
        for (v, val) in self.values.iter().enumerate() {
            match val.def {
                Def::Input(i) => {
                    let inp = self
                        .inputs
                        .get(i)
                        .ok_or(format!("value {v} reads missing input #{i}"))?;
                    if inp.shape != val.shape {
                        return Err(format!(
                            "value {v}: shape differs from input '{}'",
                            inp.name
                        ));
                    }
                }
                Def::Weight(w) => {
                    let wt = self
                        .weights
                        .get(w)
                        .ok_or(format!("value {v} reads missing weight #{w}"))?;
                    self.check_weight(wt, val)?;
                }
                Def::Step(s) => {
                    if self.steps.get(s).map(|st| st.output) != Some(v) {
                        return Err(format!("value {v} claims to be produced by step #{s}, which does not produce it"));
                    }
                }
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            let ctx =
                |m: String| format!("step #{i} '{}' ({}): {m}", step.name, step.op.kind_name());
            if !crate::runtime::supports(&step.op) {
                return Err(ctx("this runtime has no kernel for the op".into()));
            }
            if step.output >= nv || self.values[step.output].def != Def::Step(i) {
                return Err(ctx("its output value is not defined by it".into()));
            }
            let mut shapes = Vec::new();
            for (slot, &v) in step.inputs.iter().enumerate() {
                let val = self
                    .values
                    .get(v)
                    .ok_or_else(|| ctx(format!("operand {slot} is missing value {v}")))?;
                if matches!(val.def, Def::Step(j) if j >= i) {
                    return Err(ctx(format!("operand {slot} is produced later")));
                }
                if let Def::Weight(w) = val.def {
                    let layout = self.weights[w].layout;
                    let readable = match layout {
                        Layout::Plain => true,
                        Layout::PackedA { .. } => {
                            slot == 1
                                && matches!(step.op, Op::Conv2d(_) | Op::Linear)
                                && step.algo == Algo::Direct
                        }
                        Layout::WinogradTaps { .. } | Layout::WinogradFilters { .. } => {
                            slot == 1 && step.algo == Algo::WinogradF4
                        }
                    };
                    if !readable {
                        return Err(ctx(format!(
                            "operand {slot} is a weight in layout {layout:?}, which the step cannot read"
                        )));
                    }
                }
                shapes.push(val.shape.as_slice());
            }
            if step.algo == Algo::WinogradF4 {
                let winograd_conv = matches!(&step.op, Op::Conv2d(c) if c.stride == [1, 1])
                    && shapes
                        .get(1)
                        .is_some_and(|w| w.len() == 4 && w[2..] == [3, 3])
                    && step.inputs.get(1).is_some_and(|&v| {
                        matches!(self.values[v].def, Def::Weight(w)
                            if self.weights[w].layout.is_winograd())
                    });
                if !winograd_conv {
                    return Err(ctx(
                        "the Winograd kernel needs a 3x3 stride-1 convolution with a weight in a Winograd layout".into(),
                    ));
                }
            }
            if step.residual {
                let out = &self.values[step.output].shape;
                match shapes.pop() {
                    Some(r) if step.algo == Algo::WinogradF4 && r == out.as_slice() => {}
                    _ => return Err(ctx(
                        "a residual operand needs a Winograd convolution and the output's shape"
                            .into(),
                    )),
                }
            }
            let doubled;
            if step.upsample_input {
                match shapes.first() {
                    Some(&[n, c, h, w]) if step.algo == Algo::WinogradF4 => {
                        doubled = [*n, *c, 2 * h, 2 * w];
                        shapes[0] = &doubled;
                    }
                    _ => {
                        return Err(ctx(
                            "only Winograd convolutions of a 4-D input can fold an upsampling"
                                .into(),
                        ))
                    }
                }
            }
            let out = infer_node_shape(&step.op, &shapes).map_err(ctx)?;
            if out != self.values[step.output].shape {
                return Err(ctx(format!(
                    "shape rules give {} but the plan says {}",
                    shape_str(&out),
                    shape_str(&self.values[step.output].shape)
                )));
            }
        }
        if self.outputs.is_empty() {
            return Err("the program has no outputs".into());
        }
        for o in &self.outputs {
            if o.value >= nv {
                return Err(format!(
                    "output '{}' refers to missing value {}",
                    o.name, o.value
                ));
            }
        }
        if let Some(mem) = &self.memory {
            memory_plan::check_plan(self, mem)?;
        }
        Ok(())
    }

    fn check_weight(&self, wt: &Weight, val: &Value) -> Result<(), String> {
        let n = val.numel();
        let want = match wt.layout {
            Layout::Plain => n,
            Layout::PackedA { rows, depth, mr } => {
                if mr != gemm::MR {
                    return Err(format!(
                        "weight '{}' is packed for {mr}-row panels, this runtime uses {}",
                        wt.name,
                        gemm::MR
                    ));
                }
                if val.shape.first() != Some(&rows) || rows * depth != n {
                    return Err(format!(
                        "weight '{}': packed {rows}x{depth} does not match shape {}",
                        wt.name,
                        shape_str(&val.shape)
                    ));
                }
                gemm::packed_a_len(rows, depth)
            }
            Layout::WinogradTaps { rows, c_in, mr }
            | Layout::WinogradFilters { rows, c_in, mr } => {
                if mr != gemm::MR {
                    return Err(format!(
                        "weight '{}' is packed for {mr}-row panels, this runtime uses {}",
                        wt.name,
                        gemm::MR
                    ));
                }
                if val.shape != [rows, c_in, 3, 3] {
                    return Err(format!(
                        "weight '{}': Winograd weights of {rows}x{c_in}x3x3 do not match shape {}",
                        wt.name,
                        shape_str(&val.shape)
                    ));
                }
                if matches!(wt.layout, Layout::WinogradTaps { .. }) {
                    winograd::taps_len(rows, c_in)
                } else {
                    winograd::transformed_len(rows, c_in)
                }
            }
        };
        if wt.len != want || wt.data.len() != want {
            return Err(format!(
                "weight '{}' of shape {} needs {want} floats, the plan says {} and holds {}",
                wt.name,
                shape_str(&val.shape),
                wt.len,
                wt.data.len()
            ));
        }
        Ok(())
    }
}
