//! The ahead-of-time compiler: validate the graph, lower it, run the pass pipeline
//! (re-validating after every pass) and serialize the artifact.

pub mod lower;
pub mod memory_plan;
pub mod options;
pub mod passes;
pub mod replan;

use crate::artifact;
use crate::program::{Program, Target};
use passes::ProgressFn;
use plugin_api::graph::Graph;
use plugin_api::PluginError;

/// Validates and lowers `graph`, then runs every pass of [`passes::pipeline`].
pub fn build_program(
    graph: Graph,
    target: Target,
    progress: ProgressFn<'_>,
) -> Result<Program, PluginError> {
    // Stages read "<graph>: <step>", e.g. "decoder: pack weights".
    let name = graph.name.clone();
    let named =
        |stage: &str, done: u64, total: u64| progress(&format!("{name}: {stage}"), done, total);
    let progress: ProgressFn<'_> = &named;
    progress("validate", 0, 1);
    graph.validate()?;
    let shapes = graph.infer_shapes()?;
    progress("validate", 1, 1);
    let mut program = lower::lower(graph, shapes, target);
    program
        .validate()
        .map_err(|e| PluginError::internal(format!("lowering produced an invalid program: {e}")))?;
    let pipeline = passes::pipeline();
    let n = pipeline.len() as u64;
    for (i, pass) in pipeline.iter().enumerate() {
        progress(&format!("pass {}", pass.name()), i as u64, n);
        pass.run(&mut program, progress)
            .map_err(|e| e.context(format!("compiler pass {}", pass.name())))?;
        program.validate().map_err(|e| {
            PluginError::internal(format!(
                "compiler pass {} left an invalid program: {e}",
                pass.name()
            ))
        })?;
    }
    if program.memory.is_none() {
        return Err(PluginError::internal(
            "the pass pipeline produced no memory plan",
        ));
    }
    Ok(program)
}

/// Compiles `graph` with `options_json` (see [`options::parse_options`]) into artifact bytes.
pub fn compile(
    graph: Graph,
    options_json: &str,
    progress: ProgressFn<'_>,
) -> Result<Vec<u8>, PluginError> {
    let target = options::parse_options(options_json)?;
    let stage = format!("{}: serialize", graph.name);
    let program = build_program(graph, target, progress)?;
    progress(&stage, 0, 1);
    let bytes = artifact::encode(&program)?;
    progress(&stage, 1, 1);
    Ok(bytes)
}

/// Compiles `graph` for its own input shapes, then plans it for every set of input shapes in
/// `extra` (one shape per graph input) from the same packed weights ([`replan::replan`]), and
/// serializes all the plans into one artifact that stores the weights once. Plans keep the
/// order: the graph's own shapes first. A set of shapes given twice is an error.
pub fn compile_shapes(
    graph: Graph,
    extra: &[Vec<Vec<usize>>],
    options_json: &str,
    progress: ProgressFn<'_>,
) -> Result<Vec<u8>, PluginError> {
    let target = options::parse_options(options_json)?;
    let name = graph.name.clone();
    let own: Vec<Vec<usize>> = graph.inputs.iter().map(|i| i.shape.clone()).collect();
    for (k, s) in extra.iter().enumerate() {
        if *s == own || extra[..k].contains(s) {
            return Err(PluginError::invalid(format!(
                "graph '{name}': the input shapes {s:?} are given twice"
            )));
        }
    }
    let program = build_program(graph, target, progress)?;
    let mut plans = vec![program];
    let n = extra.len() as u64;
    let stage = format!("{name}: plan shapes");
    for (k, s) in extra.iter().enumerate() {
        progress(&stage, k as u64, n);
        plans.push(replan::replan(&plans[0], s)?);
    }
    progress(&stage, n, n);
    let stage = format!("{name}: serialize");
    progress(&stage, 0, 1);
    let bytes = artifact::encode_plans(&plans)?;
    progress(&stage, 1, 1);
    Ok(bytes)
}
