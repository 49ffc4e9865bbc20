//! The ahead-of-time compiler: validate the graph, lower it, run the pass pipeline
//! (re-validating after every pass) and serialize the artifact.

pub mod lower;
pub mod memory_plan;
pub mod options;
pub mod passes;

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
