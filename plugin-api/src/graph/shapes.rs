//! Shape rules of every op.

use super::op::*;
use crate::tensor::{checked_numel, shape_str};

fn arity(inputs: &[&[usize]], allowed: &[usize]) -> Result<(), String> {
    if allowed.contains(&inputs.len()) {
        Ok(())
    } else {
        Err(format!(
            "expects {} inputs, got {}",
            allowed
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" or "),
            inputs.len()
        ))
    }
}

fn rank(name: &str, s: &[usize], r: usize) -> Result<(), String> {
    if s.len() == r {
        Ok(())
    } else {
        Err(format!(
            "{name} must have rank {r}, got shape {}",
            shape_str(s)
        ))
    }
}

/// Computes the output shape of `op` applied to inputs of the given shapes, or says why the
/// shapes are invalid.
pub fn infer_node_shape(op: &Op, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
    match op {
        Op::Conv2d(c) => {
            arity(inputs, &[2, 3])?;
            let (x, w) = (inputs[0], inputs[1]);
            rank("conv2d input", x, 4)?;
            rank("conv2d weight", w, 4)?;
            if w[1] != x[1] {
                return Err(format!(
                    "weight {} expects {} input channels but input {} has {}",
                    shape_str(w),
                    w[1],
                    shape_str(x),
                    x[1]
                ));
            }
            if let Some(b) = inputs.get(2) {
                if **b != [w[0]] {
                    return Err(format!(
                        "bias shape {} does not match {} output channels",
                        shape_str(b),
                        w[0]
                    ));
                }
            }
            if c.stride[0] == 0 || c.stride[1] == 0 {
                return Err("stride must be positive".into());
            }
            let [pt, pl, pb, pr] = c.padding;
            let padded = |d: usize, a: usize, b: usize| {
                d.checked_add(a)
                    .and_then(|d| d.checked_add(b))
                    .ok_or_else(|| {
                        format!(
                            "padding {:?} of input {} overflows",
                            c.padding,
                            shape_str(x)
                        )
                    })
            };
            let (hp, wp) = (padded(x[2], pt, pb)?, padded(x[3], pl, pr)?);
            if hp < w[2] || wp < w[3] || w[2] == 0 || w[3] == 0 {
                return Err(format!(
                    "kernel {}x{} does not fit padded input {}x{}",
                    w[2], w[3], hp, wp
                ));
            }
            Ok(vec![
                x[0],
                w[0],
                (hp - w[2]) / c.stride[0] + 1,
                (wp - w[3]) / c.stride[1] + 1,
            ])
        }
        Op::GroupNorm(g) => {
            arity(inputs, &[3])?;
            let x = inputs[0];
            if x.len() < 2 {
                return Err(format!(
                    "group_norm input must be [N, C, ...], got {}",
                    shape_str(x)
                ));
            }
            let c = x[1];
            if g.num_groups == 0 || !c.is_multiple_of(g.num_groups) {
                return Err(format!(
                    "num_groups ({}) must divide num_channels ({c})",
                    g.num_groups
                ));
            }
            for (name, p) in [("gamma", inputs[1]), ("beta", inputs[2])] {
                if *p != [c] {
                    return Err(format!(
                        "{name} shape {} does not match {c} channels",
                        shape_str(p)
                    ));
                }
            }
            if !(g.eps.is_finite() && g.eps >= 0.0) {
                return Err(format!("eps must be finite and >= 0, got {}", g.eps));
            }
            Ok(x.to_vec())
        }
        Op::Activation { .. } | Op::Softmax => {
            arity(inputs, &[1])?;
            if matches!(op, Op::Softmax) && inputs[0].is_empty() {
                return Err("softmax needs rank >= 1".into());
            }
            Ok(inputs[0].to_vec())
        }
        Op::Scale(s) => {
            arity(inputs, &[1])?;
            if !s.factor.is_finite() {
                return Err(format!("scale factor must be finite, got {}", s.factor));
            }
            Ok(inputs[0].to_vec())
        }
        Op::Add => {
            arity(inputs, &[2])?;
            if inputs[0] != inputs[1] {
                return Err(format!(
                    "operand shapes differ: {} vs {}",
                    shape_str(inputs[0]),
                    shape_str(inputs[1])
                ));
            }
            Ok(inputs[0].to_vec())
        }
        Op::UpsampleNearest2x => {
            arity(inputs, &[1])?;
            let x = inputs[0];
            rank("upsample input", x, 4)?;
            let double = |d: usize| {
                d.checked_mul(2)
                    .ok_or_else(|| format!("upsampling {} overflows", shape_str(x)))
            };
            Ok(vec![x[0], x[1], double(x[2])?, double(x[3])?])
        }
        Op::Linear => {
            arity(inputs, &[2, 3])?;
            let (x, w) = (inputs[0], inputs[1]);
            rank("linear weight", w, 2)?;
            if x.is_empty() || *x.last().unwrap() != w[1] {
                return Err(format!(
                    "input {} does not end in {} features of weight {}",
                    shape_str(x),
                    w[1],
                    shape_str(w)
                ));
            }
            if let Some(b) = inputs.get(2) {
                if **b != [w[0]] {
                    return Err(format!(
                        "bias shape {} does not match {} output features",
                        shape_str(b),
                        w[0]
                    ));
                }
            }
            let mut out = x.to_vec();
            *out.last_mut().unwrap() = w[0];
            Ok(out)
        }
        Op::MatMul(m) => {
            arity(inputs, &[2])?;
            let (a, b) = (inputs[0], inputs[1]);
            if a.len() < 2 || a.len() != b.len() || a[..a.len() - 2] != b[..b.len() - 2] {
                return Err(format!(
                    "matmul needs equal leading dims and rank >= 2: {} x {}",
                    shape_str(a),
                    shape_str(b)
                ));
            }
            let r = a.len();
            let (m_, k) = (a[r - 2], a[r - 1]);
            let (kb, n) = if m.transpose_b {
                (b[r - 1], b[r - 2])
            } else {
                (b[r - 2], b[r - 1])
            };
            if k != kb {
                return Err(format!(
                    "inner dims differ: {} x {} (transpose_b = {})",
                    shape_str(a),
                    shape_str(b),
                    m.transpose_b
                ));
            }
            let mut out = a[..r - 2].to_vec();
            out.extend([m_, n]);
            Ok(out)
        }
        Op::Attention(_) => {
            arity(inputs, &[3])?;
            let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
            let ok = q.len() == 3
                && k.len() == 3
                && v.len() == 3
                && q[0] == k[0]
                && k[0] == v[0]
                && q[2] == k[2]
                && k[1] == v[1];
            if !ok {
                return Err(format!(
                    "attention needs q [B, N, D], k [B, M, D], v [B, M, E]: got {}, {}, {}",
                    shape_str(q),
                    shape_str(k),
                    shape_str(v)
                ));
            }
            Ok(vec![q[0], q[1], v[2]])
        }
        Op::Reshape(r) => {
            arity(inputs, &[1])?;
            let count = |s: &[usize]| {
                checked_numel(s).ok_or_else(|| format!("shape {} overflows", shape_str(s)))
            };
            let (a, b) = (count(inputs[0])?, count(&r.shape)?);
            if a != b {
                return Err(format!(
                    "cannot reshape {} ({a} elements) to {} ({b} elements)",
                    shape_str(inputs[0]),
                    shape_str(&r.shape)
                ));
            }
            Ok(r.shape.clone())
        }
        Op::Transpose(t) => {
            arity(inputs, &[1])?;
            let x = inputs[0];
            let mut sorted = t.perm.clone();
            sorted.sort_unstable();
            if sorted != (0..x.len()).collect::<Vec<_>>() {
                return Err(format!(
                    "perm {:?} is not a permutation of the {} dims of {}",
                    t.perm,
                    x.len(),
                    shape_str(x)
                ));
            }
            Ok(t.perm.iter().map(|&p| x[p]).collect())
        }
        Op::Slice(s) => {
            arity(inputs, &[1])?;
            let x = inputs[0];
            if s.axis >= x.len() || s.start >= s.end || s.end > x[s.axis] {
                return Err(format!(
                    "slice {}..{} on axis {} is out of range for {}",
                    s.start,
                    s.end,
                    s.axis,
                    shape_str(x)
                ));
            }
            let mut out = x.to_vec();
            out[s.axis] = s.end - s.start;
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_asymmetric_padding_stride2() {
        let op = Op::Conv2d(Conv2d {
            stride: [2, 2],
            padding: [0, 0, 1, 1],
        });
        let s = infer_node_shape(&op, &[&[1, 4, 8, 6], &[5, 4, 3, 3], &[5]]).unwrap();
        assert_eq!(s, vec![1, 5, 4, 3]);
        let e = infer_node_shape(&op, &[&[1, 3, 8, 8], &[5, 4, 3, 3]]).unwrap_err();
        assert!(e.contains("4 input channels"), "{e}");
    }

    #[test]
    fn group_norm_groups_must_divide() {
        let op = Op::GroupNorm(GroupNorm {
            num_groups: 32,
            eps: 1e-6,
        });
        let e = infer_node_shape(&op, &[&[1, 100, 2, 2], &[100], &[100]]).unwrap_err();
        assert_eq!(e, "num_groups (32) must divide num_channels (100)");
    }

    #[test]
    fn matmul_and_linear() {
        let mm = Op::MatMul(MatMul { transpose_b: true });
        assert_eq!(
            infer_node_shape(&mm, &[&[2, 5, 3], &[2, 7, 3]]).unwrap(),
            vec![2, 5, 7]
        );
        assert!(infer_node_shape(&mm, &[&[2, 5, 3], &[2, 3, 7]]).is_err());
        assert_eq!(
            infer_node_shape(&Op::Linear, &[&[2, 5, 3], &[4, 3], &[4]]).unwrap(),
            vec![2, 5, 4]
        );
    }

    #[test]
    fn overflowing_shapes_are_errors_naming_the_shape() {
        let big = usize::MAX / 2 + 1;
        let conv = Op::Conv2d(Conv2d {
            stride: [1, 1],
            padding: [big, 0, big, 0],
        });
        let e = infer_node_shape(&conv, &[&[1, 4, 8, 8], &[5, 4, 3, 3]]).unwrap_err();
        assert!(e.contains("overflows") && e.contains("[1, 4, 8, 8]"), "{e}");
        let e = infer_node_shape(&Op::UpsampleNearest2x, &[&[1, 4, big, 8]]).unwrap_err();
        assert!(e.contains(&format!("[1, 4, {big}, 8]")), "{e}");
        let reshape = Op::Reshape(Reshape { shape: vec![2] });
        let e = infer_node_shape(&reshape, &[&[big, 4]]).unwrap_err();
        assert!(e.contains(&format!("[{big}, 4]")), "{e}");
    }
}
