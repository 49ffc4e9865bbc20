//! Plans a compiled program for other input shapes without repacking its weights: the new plan
//! keeps the template's steps, kernels and weights (the same stored floats, shared), re-infers
//! every other value's shape from the new inputs, then schedules and plans memory again
//! ([`ScheduleMemory`], [`PlanMemory`], which also checks the memory budget).
//!
//! A reshape's target is derived from the new shapes: dimensions merged into one stay merged,
//! and a dimension split again takes the split of the nearest earlier value that had the same
//! run of dimensions in the template (the VAE's attention flattens `[n, c, h, w]` to
//! `[n, c, h*w]` and unflattens it). A slice must keep its axis's size.

use super::passes::{Pass, PlanMemory, ScheduleMemory};
use crate::program::{Def, Program, Role};
use plugin_api::graph::{infer_node_shape, Op, Reshape};
use plugin_api::tensor::{checked_numel, shape_str};
use plugin_api::PluginError;

/// `template` planned for inputs of `shapes` (one per graph input, in order).
pub fn replan(template: &Program, shapes: &[Vec<usize>]) -> Result<Program, PluginError> {
    let fail = |m: String| {
        PluginError::invalid(format!(
            "graph '{}' cannot be planned for inputs {}: {m}",
            template.name,
            shapes
                .iter()
                .map(|s| shape_str(s))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    if shapes.len() != template.inputs.len() {
        return Err(fail(format!(
            "the graph has {} inputs",
            template.inputs.len()
        )));
    }
    let mut p = template.clone();
    p.memory = None;
    for (i, s) in shapes.iter().enumerate() {
        let old = &template.inputs[i].shape;
        if s.len() != old.len() || s.contains(&0) {
            return Err(fail(format!(
                "input '{}' needs rank {} and no zero dimension",
                template.inputs[i].name,
                old.len()
            )));
        }
        if checked_numel(s).is_none_or(|n| n.checked_mul(4).is_none()) {
            return Err(fail(format!(
                "input '{}' is too large",
                template.inputs[i].name
            )));
        }
        p.inputs[i].shape = s.clone();
    }
    for v in &mut p.values {
        if let Def::Input(i) = v.def {
            v.shape = shapes[i].clone();
        }
    }
    for s in 0..p.steps.len() {
        let step = &p.steps[s];
        let name = step.name.clone();
        if let Op::Reshape(r) = &step.op {
            let target = reshape_target(template, &p, s, &r.shape)
                .map_err(|m| fail(format!("reshape '{name}': {m}")))?;
            p.steps[s].op = Op::Reshape(Reshape { shape: target });
        }
        if let Op::Slice(sl) = &p.steps[s].op {
            let x = p.steps[s].inputs[0];
            if p.values[x].shape.get(sl.axis) != template.values[x].shape.get(sl.axis) {
                return Err(fail(format!(
                    "slice '{name}' needs its axis {} to keep its size",
                    sl.axis
                )));
            }
        }
        let step = &p.steps[s];
        let mut ins: Vec<Vec<usize>> = step
            .inputs
            .iter()
            .map(|&v| p.values[v].shape.clone())
            .collect();
        if step.upsample_input {
            let x = &mut ins[0];
            let (h, w) = (x[2].checked_mul(2), x[3].checked_mul(2));
            match (h, w) {
                (Some(h), Some(w)) => (x[2], x[3]) = (h, w),
                _ => return Err(fail(format!("step '{name}': input too large"))),
            }
        }
        let refs: Vec<&[usize]> = ins.iter().map(Vec::as_slice).collect();
        let out =
            infer_node_shape(&step.op, &refs).map_err(|m| fail(format!("step '{name}': {m}")))?;
        if let Some(r) = step.operand(Role::Residual) {
            if p.values[r].shape != out {
                return Err(fail(format!(
                    "step '{name}': residual {} does not match output {}",
                    shape_str(&p.values[r].shape),
                    shape_str(&out)
                )));
            }
        }
        let o = step.output;
        p.values[o].shape = out;
    }
    let quiet = |_: &str, _: u64, _: u64| {};
    ScheduleMemory.run(&mut p, &quiet)?;
    PlanMemory.run(&mut p, &quiet)?;
    p.validate()
        .map_err(|e| PluginError::internal(format!("replanning left an invalid program: {e}")))?;
    Ok(p)
}

/// Dimension groups of a reshape from `a` to `b` (equal products): `(a range, b range)` pairs,
/// each the shortest runs whose products agree.
fn groups(
    a: &[usize],
    b: &[usize],
) -> Option<Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        let (si, sj) = (i, j);
        let (mut pa, mut pb) = (1usize, 1usize);
        if i < a.len() {
            pa = a[i];
            i += 1;
        }
        if j < b.len() {
            pb = b[j];
            j += 1;
        }
        while pa != pb {
            if pa < pb && i < a.len() {
                pa = pa.checked_mul(a[i])?;
                i += 1;
            } else if pb < pa && j < b.len() {
                pb = pb.checked_mul(b[j])?;
                j += 1;
            } else {
                return None;
            }
        }
        out.push((si..i, sj..j));
    }
    Some(out)
}

/// The target of reshape step `s` of `p` (whose values up to the step have their new shapes),
/// given its template target `old_target`.
fn reshape_target(
    template: &Program,
    p: &Program,
    s: usize,
    old_target: &[usize],
) -> Result<Vec<usize>, String> {
    let x = p.steps[s].inputs[0];
    let (old_in, new_in) = (&template.values[x].shape, &p.values[x].shape);
    if old_in == new_in {
        return Ok(old_target.to_vec());
    }
    let gs = groups(old_in, old_target).ok_or_else(|| {
        format!(
            "{} -> {} has no dimension grouping",
            shape_str(old_in),
            shape_str(old_target)
        )
    })?;
    let mut target = Vec::with_capacity(old_target.len());
    for (ri, ro) in gs {
        let (oi, ni, oo) = (&old_in[ri.clone()], &new_in[ri], &old_target[ro]);
        if oi == ni {
            target.extend_from_slice(oo);
        } else if oo.len() == 1 {
            target.push(checked_numel(ni).ok_or("too large")?);
        } else if ni.len() == 1 {
            target.extend(split_like(template, p, s, oo, ni[0]).ok_or_else(|| {
                format!(
                    "cannot tell how to split {} into {} dimensions (template {})",
                    ni[0],
                    oo.len(),
                    shape_str(oo)
                )
            })?);
        } else {
            return Err(format!(
                "{} -> {} regroups dimensions",
                shape_str(old_in),
                shape_str(old_target)
            ));
        }
    }
    Ok(target)
}

/// The new dims of the nearest value before step `s` whose template shape holds the run `run`
/// (searched from its last dimension) and whose new dims there multiply to `n`.
fn split_like(
    template: &Program,
    p: &Program,
    s: usize,
    run: &[usize],
    n: usize,
) -> Option<Vec<usize>> {
    let earlier = p.steps[..s]
        .iter()
        .rev()
        .map(|st| st.output)
        .chain((0..p.values.len()).filter(|&v| matches!(p.values[v].def, Def::Input(_))));
    for v in earlier {
        let (old, new) = (&template.values[v].shape, &p.values[v].shape);
        if old.len() != new.len() || old.len() < run.len() {
            continue;
        }
        for at in (0..=old.len() - run.len()).rev() {
            let dims = &new[at..at + run.len()];
            if old[at..at + run.len()] == *run && checked_numel(dims) == Some(n) {
                return Some(dims.to_vec());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::groups;

    #[test]
    fn reshape_groups() {
        assert_eq!(
            groups(&[1, 8, 4, 6], &[1, 8, 24]).unwrap(),
            vec![(0..1, 0..1), (1..2, 1..2), (2..4, 2..3)]
        );
        assert_eq!(
            groups(&[2, 24], &[2, 4, 6]).unwrap(),
            vec![(0..1, 0..1), (1..2, 1..3)]
        );
        assert!(groups(&[6], &[4]).is_none());
    }
}
