//! [`Program::validate`]: every invariant the runtime relies on, checked after lowering, after
//! every compiler pass and when an artifact is loaded.

use super::liveness;
use super::ops;
use super::{Algo, Def, Layout, Program, Role, Value, Weight};
use crate::kernels::{gemm, winograd};
use plugin_api::graph::{infer_node_shape, Op};
use plugin_api::tensor::{checked_bytes, shape_str};

impl Program {
    /// Checks every invariant the runtime relies on: ids in range, topological order, shapes
    /// (re-running the IR's shape rules), weight layouts and lengths, and, if present, that the
    /// memory plan never places two simultaneously live values in overlapping memory.
    pub fn validate(&self) -> Result<(), String> {
        let nv = self.values.len();
        for inp in &self.inputs {
            checked_bytes(&inp.shape, 4)
                .map_err(|e| format!("input '{}': {}", inp.name, e.message()))?;
        }
        for (v, val) in self.values.iter().enumerate() {
            // Every size below is computed from shapes that fit in memory.
            checked_bytes(&val.shape, 4).map_err(|e| format!("value {v}: {}", e.message()))?;
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
            if !ops::supports(&step.op) {
                return Err(ctx("this runtime has no kernel for the op".into()));
            }
            if step.output >= nv || self.values[step.output].def != Def::Step(i) {
                return Err(ctx("its output value is not defined by it".into()));
            }
            let weight_slot = step.slot(Role::Weight);
            let mut shapes = Vec::new();
            for (slot, v) in step.reads().enumerate() {
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
                            weight_slot == Some(slot) && step.algo == Algo::Gemm
                        }
                        Layout::WinogradTaps { .. } | Layout::WinogradFilters { .. } => {
                            weight_slot == Some(slot) && step.algo == Algo::WinogradF4
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
                    && step.operand(Role::Weight).is_some_and(|v| {
                        matches!(self.values[v].def, Def::Weight(w)
                            if self.weights[w].layout.is_winograd())
                    });
                if !winograd_conv {
                    return Err(ctx(
                        "the Winograd kernel needs a 3x3 stride-1 convolution with a weight in a Winograd layout".into(),
                    ));
                }
            }
            if step.residual.is_some() {
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
                    Some(&[n, c, h, w])
                        if step.algo == Algo::WinogradF4
                            && h.checked_mul(2).is_some()
                            && w.checked_mul(2).is_some() =>
                    {
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
            liveness::check_plan(self, mem)?;
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
                if val.shape.first() != Some(&rows) || rows.checked_mul(depth) != Some(n) {
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
