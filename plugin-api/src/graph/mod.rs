//! The graph IR: a static-shape dataflow graph of [`Op`]s with named inputs, constants
//! (weights) and outputs.
//!
//! Values are addressed by [`ValueRef`]: a graph input, a constant, or the output of a node.
//! Nodes are stored in topological order (a node may only read earlier nodes), which
//! [`Graph::validate`] checks together with every op's shape rules.

mod builder;
mod op;
mod shapes;

pub use builder::GraphBuilder;
pub use op::*;
pub use shapes::infer_node_shape;

use crate::error::PluginError;
use crate::tensor::{checked_bytes, shape_str, Tensor};
use abi_stable::std_types::{RString, RVec};
use abi_stable::StableAbi;
use serde::{Deserialize, Serialize};

/// Version of the IR's serialized form; bumped on any incompatible change.
pub const IR_VERSION: u32 = 1;

/// A reference to a value of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "index", rename_all = "snake_case")]
pub enum ValueRef {
    /// `graph.inputs[i]`.
    Input(usize),
    /// `graph.constants[i]`.
    Const(usize),
    /// The output of `graph.nodes[i]`.
    Node(usize),
}

/// A graph input with its static shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// Name used when calling (e.g. `x`, `z`).
    pub name: String,
    /// Static shape.
    pub shape: Vec<usize>,
}

/// A constant (weight) tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constant {
    /// The checkpoint key it came from, e.g. `decoder.conv_in.weight`.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major elements (not serialized in the JSON part of a [`GraphBlob`]).
    #[serde(skip)]
    pub data: Vec<f32>,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// A unique, readable name following the checkpoint tree, e.g. `decoder.mid_block.resnets.0.conv1`.
    pub name: String,
    /// What it computes.
    pub op: Op,
    /// Its operands.
    pub inputs: Vec<ValueRef>,
}

/// A named graph output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Name returned to the caller (e.g. `moments`, `sample`).
    pub name: String,
    /// The value.
    pub value: ValueRef,
}

/// A complete static-shape graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Graph {
    /// e.g. `encoder`, `decoder`.
    pub name: String,
    /// Inputs in call order.
    pub inputs: Vec<Input>,
    /// Weights.
    pub constants: Vec<Constant>,
    /// Operations in topological order.
    pub nodes: Vec<Node>,
    /// Outputs in return order.
    pub outputs: Vec<Output>,
}

impl Graph {
    /// Human-readable name of a value for messages.
    pub fn value_name(&self, v: ValueRef) -> String {
        match v {
            ValueRef::Input(i) => self
                .inputs
                .get(i)
                .map(|x| format!("input '{}'", x.name))
                .unwrap_or_else(|| format!("input #{i}")),
            ValueRef::Const(i) => self
                .constants
                .get(i)
                .map(|x| format!("constant '{}'", x.name))
                .unwrap_or_else(|| format!("constant #{i}")),
            ValueRef::Node(i) => self
                .nodes
                .get(i)
                .map(|x| format!("node '{}'", x.name))
                .unwrap_or_else(|| format!("node #{i}")),
        }
    }

    /// Checks structure and shapes and returns the shape of every node output, in node order.
    ///
    /// Errors name the graph, the node and the offending shapes.
    pub fn infer_shapes(&self) -> Result<Vec<Vec<usize>>, PluginError> {
        let mut node_shapes: Vec<Vec<usize>> = Vec::with_capacity(self.nodes.len());
        let ctx = |msg: String| PluginError::invalid(format!("graph '{}': {msg}", self.name));
        for inp in self.inputs.iter() {
            checked_bytes(&inp.shape, 4)
                .map_err(|e| ctx(format!("input '{}': {}", inp.name, e.message())))?;
        }
        for (i, c) in self.constants.iter().enumerate() {
            let n = checked_bytes(&c.shape, 4)
                .map_err(|e| ctx(format!("constant #{i} '{}': {}", c.name, e.message())))?
                / 4;
            if c.data.len() != n {
                return Err(ctx(format!(
                    "constant #{i} '{}' of shape {} has {} elements, expected {n}",
                    c.name,
                    shape_str(&c.shape),
                    c.data.len()
                )));
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let mut in_shapes: Vec<&[usize]> = Vec::with_capacity(node.inputs.len());
            for &v in &node.inputs {
                let s: &[usize] = match v {
                    ValueRef::Input(j) => self.inputs.get(j).map(|x| x.shape.as_slice()),
                    ValueRef::Const(j) => self.constants.get(j).map(|x| x.shape.as_slice()),
                    ValueRef::Node(j) if j < i => Some(node_shapes[j].as_slice()),
                    ValueRef::Node(_) => None,
                }
                .ok_or_else(|| {
                    ctx(format!(
                        "node #{i} '{}' reads {}, which does not exist or comes later",
                        node.name,
                        self.value_name(v)
                    ))
                })?;
                in_shapes.push(s);
            }
            let out = infer_node_shape(&node.op, &in_shapes).map_err(|m| {
                ctx(format!(
                    "node #{i} '{}' ({}): {m}",
                    node.name,
                    node.op.kind_name()
                ))
            })?;
            checked_bytes(&out, 4).map_err(|e| {
                ctx(format!(
                    "node #{i} '{}' ({}): output {}",
                    node.name,
                    node.op.kind_name(),
                    e.message()
                ))
            })?;
            node_shapes.push(out);
        }
        if self.outputs.is_empty() {
            return Err(ctx("has no outputs".into()));
        }
        for o in &self.outputs {
            let ok = match o.value {
                ValueRef::Input(j) => j < self.inputs.len(),
                ValueRef::Const(j) => j < self.constants.len(),
                ValueRef::Node(j) => j < self.nodes.len(),
            };
            if !ok {
                return Err(ctx(format!(
                    "output '{}' refers to missing {}",
                    o.name,
                    self.value_name(o.value)
                )));
            }
        }
        Ok(node_shapes)
    }

    /// Shape of any value, given the node shapes from [`Graph::infer_shapes`].
    pub fn value_shape<'a>(&'a self, v: ValueRef, node_shapes: &'a [Vec<usize>]) -> &'a [usize] {
        match v {
            ValueRef::Input(j) => &self.inputs[j].shape,
            ValueRef::Const(j) => &self.constants[j].shape,
            ValueRef::Node(j) => &node_shapes[j],
        }
    }

    /// Validates the graph (structure, unique names, shapes).
    pub fn validate(&self) -> Result<(), PluginError> {
        let mut seen = std::collections::HashSet::new();
        for n in &self.nodes {
            if !seen.insert(n.name.as_str()) {
                return Err(PluginError::invalid(format!(
                    "graph '{}': duplicate node name '{}'",
                    self.name, n.name
                )));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for x in &self.inputs {
            if !seen.insert(x.name.as_str()) {
                return Err(PluginError::invalid(format!(
                    "graph '{}': duplicate input name '{}'",
                    self.name, x.name
                )));
            }
        }
        self.infer_shapes().map(|_| ())
    }

    /// Moves the graph into its FFI form.
    pub fn into_blob(mut self) -> Result<GraphBlob, PluginError> {
        let constants: Vec<Tensor> = self
            .constants
            .iter_mut()
            .map(|c| Tensor::new(c.shape.clone(), std::mem::take(&mut c.data)))
            .collect::<Result<_, _>>()?;
        let structure = serde_json::to_string(&self)
            .map_err(|e| PluginError::internal(format!("serializing graph: {e}")))?;
        Ok(GraphBlob {
            ir_version: IR_VERSION,
            structure: RString::from(structure),
            constants: RVec::from(constants),
        })
    }
}

/// The FFI form of a [`Graph`]: the structure as JSON plus the constant tensors, moved (not
/// copied) across the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct GraphBlob {
    /// [`IR_VERSION`] of the producer.
    pub ir_version: u32,
    /// JSON of the [`Graph`] without constant data.
    pub structure: RString,
    /// Constant data, in `graph.constants` order.
    pub constants: RVec<Tensor>,
}

impl GraphBlob {
    /// Rebuilds the [`Graph`], checking the IR version and constant shapes.
    pub fn into_graph(self) -> Result<Graph, PluginError> {
        if self.ir_version != IR_VERSION {
            return Err(PluginError::unsupported(format!(
                "graph IR version {} is not supported (this build reads version {IR_VERSION})",
                self.ir_version
            )));
        }
        let mut g: Graph = serde_json::from_str(&self.structure)
            .map_err(|e| PluginError::invalid(format!("malformed graph structure: {e}")))?;
        if g.constants.len() != self.constants.len() {
            return Err(PluginError::invalid(format!(
                "graph '{}' declares {} constants but {} were passed",
                g.name,
                g.constants.len(),
                self.constants.len()
            )));
        }
        for (c, t) in g.constants.iter_mut().zip(self.constants) {
            let (shape, data) = t.into_parts();
            if shape != c.shape {
                return Err(PluginError::invalid(format!(
                    "constant '{}': declared shape {} but data has shape {}",
                    c.name,
                    shape_str(&c.shape),
                    shape_str(&shape)
                )));
            }
            c.data = data;
        }
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_values_whose_bytes_overflow_are_invalid_arguments() {
        let mut g = GraphBuilder::new("huge");
        let x = g.input("x", vec![1 << 50, 4, 64, 64]);
        let y = g.activation("y", x, Activation::Silu);
        g.output("y", y);
        let e = g.finish().and_then(|g| g.infer_shapes()).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::InvalidArgument);
        assert!(
            e.message().contains("input 'x'")
                && e.message().contains("[1125899906842624, 4, 64, 64]"),
            "{e}"
        );
        let mut g = GraphBuilder::new("up");
        // 2^61 bytes in, 2^63 bytes out.
        let x = g.input("x", vec![1 << 21, 4, 1 << 18, 1 << 18]);
        let y = g.upsample_nearest_2x("up", x);
        g.output("y", y);
        let e = g.finish().and_then(|g| g.infer_shapes()).unwrap_err();
        assert!(
            e.message().contains("node #0 'up'")
                && e.message().contains("[2097152, 4, 524288, 524288]"),
            "{e}"
        );
    }
}
