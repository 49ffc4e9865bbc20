//! Lowering of a validated IR graph into the program form the passes work on.

use crate::program::{Def, Layout, OutputDesc, Program, Step, Target, TensorDesc, Value, Weight};
use plugin_api::graph::{Graph, ValueRef};

/// Turns `graph` (already validated, with `node_shapes` from `infer_shapes`) into a program with
/// plain weights and no memory plan. Moves the constant data.
pub fn lower(graph: Graph, node_shapes: Vec<Vec<usize>>, target: Target) -> Program {
    let mut values = Vec::new();
    let input_ids: Vec<usize> = graph
        .inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| {
            values.push(Value {
                shape: inp.shape.clone(),
                def: Def::Input(i),
            });
            values.len() - 1
        })
        .collect();
    let mut weights = Vec::new();
    let const_ids: Vec<usize> = graph
        .constants
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            values.push(Value {
                shape: c.shape,
                def: Def::Weight(i),
            });
            weights.push(Weight {
                name: c.name,
                layout: Layout::Plain,
                len: c.data.len(),
                data: std::sync::Arc::new(c.data),
            });
            values.len() - 1
        })
        .collect();
    let mut node_ids = Vec::with_capacity(graph.nodes.len());
    let map = |v: ValueRef, node_ids: &[usize]| match v {
        ValueRef::Input(i) => input_ids[i],
        ValueRef::Const(i) => const_ids[i],
        ValueRef::Node(i) => node_ids[i],
    };
    let mut steps = Vec::with_capacity(graph.nodes.len());
    for (i, (node, shape)) in graph.nodes.into_iter().zip(node_shapes).enumerate() {
        let inputs = node.inputs.iter().map(|&v| map(v, &node_ids)).collect();
        values.push(Value {
            shape,
            def: Def::Step(i),
        });
        node_ids.push(values.len() - 1);
        steps.push(Step {
            name: node.name,
            op: node.op,
            inputs,
            output: values.len() - 1,
            activation: None,
            algo: Default::default(),
            upsample_input: false,
            residual: None,
        });
    }
    let outputs = graph
        .outputs
        .iter()
        .map(|o| OutputDesc {
            name: o.name.clone(),
            value: map(o.value, &node_ids),
        })
        .collect();
    Program {
        name: graph.name,
        target,
        inputs: graph
            .inputs
            .into_iter()
            .map(|i| TensorDesc {
                name: i.name,
                shape: i.shape,
            })
            .collect(),
        outputs,
        values,
        weights,
        steps,
        memory: None,
    }
}
