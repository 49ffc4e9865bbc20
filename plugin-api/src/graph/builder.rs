//! A small builder that names nodes and keeps them in topological order.

use super::op::*;
use super::{Constant, Graph, Input, Node, Output, ValueRef};

/// Builds a [`Graph`] node by node. Node names must be unique; [`Graph::validate`] checks it.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: Graph,
}

impl GraphBuilder {
    /// Starts a graph called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        GraphBuilder {
            graph: Graph {
                name: name.into(),
                ..Graph::default()
            },
        }
    }
    /// Adds a graph input.
    pub fn input(&mut self, name: impl Into<String>, shape: Vec<usize>) -> ValueRef {
        self.graph.inputs.push(Input {
            name: name.into(),
            shape,
        });
        ValueRef::Input(self.graph.inputs.len() - 1)
    }
    /// Adds a constant.
    pub fn constant(
        &mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        data: Vec<f32>,
    ) -> ValueRef {
        self.graph.constants.push(Constant {
            name: name.into(),
            shape,
            data,
        });
        ValueRef::Const(self.graph.constants.len() - 1)
    }
    /// Adds a node.
    pub fn node(&mut self, name: impl Into<String>, op: Op, inputs: Vec<ValueRef>) -> ValueRef {
        self.graph.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
        });
        ValueRef::Node(self.graph.nodes.len() - 1)
    }
    /// Marks a value as a named output.
    pub fn output(&mut self, name: impl Into<String>, value: ValueRef) {
        self.graph.outputs.push(Output {
            name: name.into(),
            value,
        });
    }
    /// `conv2d(x, w, b)`.
    pub fn conv2d(
        &mut self,
        name: impl Into<String>,
        x: ValueRef,
        w: ValueRef,
        b: Option<ValueRef>,
        stride: [usize; 2],
        padding: [usize; 4],
    ) -> ValueRef {
        let mut ins = vec![x, w];
        ins.extend(b);
        self.node(name, Op::Conv2d(Conv2d { stride, padding }), ins)
    }
    /// `group_norm(x, gamma, beta)`.
    pub fn group_norm(
        &mut self,
        name: impl Into<String>,
        x: ValueRef,
        gamma: ValueRef,
        beta: ValueRef,
        num_groups: usize,
        eps: f32,
    ) -> ValueRef {
        self.node(
            name,
            Op::GroupNorm(GroupNorm { num_groups, eps }),
            vec![x, gamma, beta],
        )
    }
    /// Element-wise activation.
    pub fn activation(
        &mut self,
        name: impl Into<String>,
        x: ValueRef,
        kind: Activation,
    ) -> ValueRef {
        self.node(name, Op::Activation { kind }, vec![x])
    }
    /// `a + b`.
    pub fn add(&mut self, name: impl Into<String>, a: ValueRef, b: ValueRef) -> ValueRef {
        self.node(name, Op::Add, vec![a, b])
    }
    /// `x * factor`.
    pub fn scale(&mut self, name: impl Into<String>, x: ValueRef, factor: f32) -> ValueRef {
        self.node(name, Op::Scale(Scale { factor }), vec![x])
    }
    /// Nearest 2x upsampling.
    pub fn upsample_nearest_2x(&mut self, name: impl Into<String>, x: ValueRef) -> ValueRef {
        self.node(name, Op::UpsampleNearest2x, vec![x])
    }
    /// `x @ w^T + b`.
    pub fn linear(
        &mut self,
        name: impl Into<String>,
        x: ValueRef,
        w: ValueRef,
        b: Option<ValueRef>,
    ) -> ValueRef {
        let mut ins = vec![x, w];
        ins.extend(b);
        self.node(name, Op::Linear, ins)
    }
    /// Batched `a @ b` (or `a @ b^T`).
    pub fn matmul(
        &mut self,
        name: impl Into<String>,
        a: ValueRef,
        b: ValueRef,
        transpose_b: bool,
    ) -> ValueRef {
        self.node(name, Op::MatMul(MatMul { transpose_b }), vec![a, b])
    }
    /// Softmax over the last dim.
    pub fn softmax(&mut self, name: impl Into<String>, x: ValueRef) -> ValueRef {
        self.node(name, Op::Softmax, vec![x])
    }
    /// Reshape.
    pub fn reshape(&mut self, name: impl Into<String>, x: ValueRef, shape: Vec<usize>) -> ValueRef {
        self.node(name, Op::Reshape(Reshape { shape }), vec![x])
    }
    /// Transpose.
    pub fn transpose(
        &mut self,
        name: impl Into<String>,
        x: ValueRef,
        perm: Vec<usize>,
    ) -> ValueRef {
        self.node(name, Op::Transpose(Transpose { perm }), vec![x])
    }
    /// Slice along one axis.
    pub fn slice(
        &mut self,
        name: impl Into<String>,
        x: ValueRef,
        axis: usize,
        start: usize,
        end: usize,
    ) -> ValueRef {
        self.node(name, Op::Slice(Slice { axis, start, end }), vec![x])
    }
    /// Finishes and validates the graph.
    pub fn finish(self) -> Result<Graph, crate::PluginError> {
        self.graph.validate()?;
        Ok(self.graph)
    }
}
