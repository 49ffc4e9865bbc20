//! The closed set of operators. Each op is an attribute struct (or a unit variant); inputs are
//! listed on the [`super::Node`]. Shapes are NCHW for image ops.

use serde::{Deserialize, Serialize};

/// 2-D convolution. Inputs: `x: [N, C_in, H, W]`, `w: [C_out, C_in, KH, KW]`, optional
/// `b: [C_out]`. Output: `[N, C_out, (H + pt + pb - KH) / sh + 1, (W + pl + pr - KW) / sw + 1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conv2d {
    /// `[stride_h, stride_w]`.
    pub stride: [usize; 2],
    /// Zero padding `[top, left, bottom, right]`, possibly asymmetric.
    pub padding: [usize; 4],
}

/// Group normalization over `[N, C, ...]`. Inputs: `x`, `gamma: [C]`, `beta: [C]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupNorm {
    /// Number of groups; must divide C.
    pub num_groups: usize,
    /// Added to the variance.
    pub eps: f32,
}

/// Element-wise activation functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(x)` (diffusers `silu` / `swish`).
    Silu,
    /// `max(x, 0)`.
    Relu,
    /// `x * Phi(x)`, exact (erf) form.
    Gelu,
    /// `x * tanh(softplus(x))`.
    Mish,
}

/// `x * factor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scale {
    /// The multiplier.
    pub factor: f32,
}

/// Batched matrix product over the last two dims. Inputs: `a: [..., M, K]` and
/// `b: [..., K, N]` (or `[..., N, K]` when `transpose_b`); leading dims must be equal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatMul {
    /// Whether `b` is stored transposed.
    pub transpose_b: bool,
}

/// Scaled dot-product attention `softmax(scale * q k^T) v` over the last two dims. Inputs:
/// `q: [B, N, D]`, `k: [B, M, D]`, `v: [B, M, E]`; output `[B, N, E]`. Produced by the
/// `rbln-npu` compiler's `FuseAttention` pass from `matmul` -> `softmax` -> `matmul`, so that the
/// `N x M` scores are computed a block of query rows at a time instead of all at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attention {
    /// Multiplier of the scores before the softmax.
    pub scale: f32,
}

/// New shape with the same number of elements (row-major reinterpretation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reshape {
    /// The output shape.
    pub shape: Vec<usize>,
}

/// Permutes dimensions: output dim `i` is input dim `perm[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transpose {
    /// A permutation of `0..rank`.
    pub perm: Vec<usize>,
}

/// Takes `start..end` along `axis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    /// The dimension sliced.
    pub axis: usize,
    /// First index kept.
    pub start: usize,
    /// One past the last index kept.
    pub end: usize,
}

/// An operator of the IR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Op {
    /// See [`Conv2d`]. Inputs `[x, w]` or `[x, w, b]`.
    Conv2d(Conv2d),
    /// See [`GroupNorm`]. Inputs `[x, gamma, beta]`.
    GroupNorm(GroupNorm),
    /// Element-wise activation. Inputs `[x]`.
    Activation {
        /// Which function.
        kind: Activation,
    },
    /// Element-wise sum of two tensors of identical shape. Inputs `[a, b]`.
    Add,
    /// See [`Scale`]. Inputs `[x]`.
    Scale(Scale),
    /// Nearest-neighbour 2x upsampling of `[N, C, H, W]` to `[N, C, 2H, 2W]`. Inputs `[x]`.
    UpsampleNearest2x,
    /// Fully connected layer on the last dim: `x: [..., K]`, `w: [N, K]`, optional `b: [N]`,
    /// output `[..., N]` (PyTorch `nn.Linear`). Inputs `[x, w]` or `[x, w, b]`.
    Linear,
    /// See [`MatMul`]. Inputs `[a, b]`.
    MatMul(MatMul),
    /// Softmax over the last dimension. Inputs `[x]`.
    Softmax,
    /// See [`Attention`]. Inputs `[q, k, v]`.
    Attention(Attention),
    /// See [`Reshape`]. Inputs `[x]`.
    Reshape(Reshape),
    /// See [`Transpose`]. Inputs `[x]`.
    Transpose(Transpose),
    /// See [`Slice`]. Inputs `[x]`.
    Slice(Slice),
}

impl Op {
    /// A short name for messages, e.g. `conv2d`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "conv2d",
            Op::GroupNorm(_) => "group_norm",
            Op::Activation { .. } => "activation",
            Op::Add => "add",
            Op::Scale(_) => "scale",
            Op::UpsampleNearest2x => "upsample_nearest_2x",
            Op::Linear => "linear",
            Op::MatMul(_) => "matmul",
            Op::Softmax => "softmax",
            Op::Attention(_) => "attention",
            Op::Reshape(_) => "reshape",
            Op::Transpose(_) => "transpose",
            Op::Slice(_) => "slice",
        }
    }
}
