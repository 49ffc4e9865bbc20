//! Human-readable summary of an artifact.

use crate::artifact;
use crate::program::Program;
use plugin_api::tensor::shape_str;
use plugin_api::PluginError;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Verifies `bytes` and describes the compiled graph, its memory plan and its target.
pub fn inspect(bytes: &[u8]) -> Result<String, PluginError> {
    let p = artifact::decode(bytes)?;
    Ok(summary(&p, bytes.len()))
}

fn mib(bytes: usize) -> String {
    format!(
        "{bytes} bytes ({:.2} MiB)",
        bytes as f64 / (1024.0 * 1024.0)
    )
}

/// The summary text of a program.
pub fn summary(p: &Program, artifact_len: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "rbln-npu artifact v{} ({artifact_len} bytes)",
        artifact::FORMAT_VERSION
    );
    let _ = writeln!(s, "graph: {}", p.name);
    let _ = writeln!(
        s,
        "target npu: {} (num_devices: {}); executes on host CPU cores, no NPU hardware",
        p.target.npu.as_deref().unwrap_or("default"),
        p.target
            .num_devices
            .map_or("default".to_string(), |n| n.to_string())
    );
    for i in &p.inputs {
        let _ = writeln!(s, "input  {}: {} f32", i.name, shape_str(&i.shape));
    }
    for o in &p.outputs {
        let _ = writeln!(
            s,
            "output {}: {} f32",
            o.name,
            shape_str(&p.values[o.value].shape)
        );
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for st in &p.steps {
        let k = crate::runtime::profile::kernel_label(st);
        *kinds.entry(k).or_default() += 1;
    }
    let _ = writeln!(s, "steps: {}", p.steps.len());
    for (k, n) in kinds {
        let _ = writeln!(s, "  {k}: {n}");
    }
    let wbytes: usize = p.weights.iter().map(|w| w.len * 4).sum();
    let _ = writeln!(s, "weights: {} tensors, {}", p.weights.len(), mib(wbytes));
    let arena = p.memory.as_ref().map_or(0, |m| m.arena_len * 4);
    let _ = writeln!(s, "arena (peak activation memory): {}", mib(arena));
    s
}
