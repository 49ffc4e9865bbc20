//! The building blocks of the VAE graphs, one method per diffusers module: ResnetBlock2D,
//! the single-head mid-block Attention, UNetMidBlock2D, Downsample2D and Upsample2D.
//!
//! Node names follow the checkpoint keys (`decoder.mid_block.resnets.0.conv1`); constants are
//! named by their full key (`decoder.mid_block.resnets.0.conv1.weight`).

use crate::weights::Weights;
use plugin_api::graph::{Activation, Graph, GraphBuilder, ValueRef};
use plugin_api::PluginError;

/// diffusers builds every VAE GroupNorm with this epsilon.
pub const GROUP_NORM_EPS: f32 = 1e-6;

/// A value of the graph being built with its NCHW shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct T {
    pub v: ValueRef,
    pub s: [usize; 4],
}

/// A [`GraphBuilder`] that knows the weights, group count and activation of the model.
pub(crate) struct Blocks<'a> {
    b: GraphBuilder,
    weights: &'a Weights,
    groups: usize,
    act: Activation,
}

impl<'a> Blocks<'a> {
    pub fn new(name: &str, weights: &'a Weights, groups: usize, act: Activation) -> Self {
        Blocks {
            b: GraphBuilder::new(name),
            weights,
            groups,
            act,
        }
    }

    pub fn input(&mut self, name: &str, s: [usize; 4]) -> T {
        T {
            v: self.b.input(name, s.to_vec()),
            s,
        }
    }

    /// Names `x` as an output and validates the graph.
    pub fn finish(mut self, name: &str, x: T) -> Result<Graph, PluginError> {
        self.b.output(name, x.v);
        self.b.finish()
    }

    fn param(&mut self, key: &str) -> Result<ValueRef, PluginError> {
        let w = self.weights.get(key)?;
        Ok(self.b.constant(key, w.shape.clone(), w.data.clone()))
    }

    /// `nn.Conv2d` at `key` with the given stride and `[top, left, bottom, right]` padding.
    pub fn conv(
        &mut self,
        key: &str,
        x: T,
        stride: usize,
        padding: [usize; 4],
    ) -> Result<T, PluginError> {
        let wk = format!("{key}.weight");
        let (cout, kh, kw) = {
            let s = &self.weights.get(&wk)?.shape;
            (s[0], s[2], s[3])
        };
        let w = self.param(&wk)?;
        let bias = self.param(&format!("{key}.bias"))?;
        let v = self
            .b
            .conv2d(key, x.v, w, Some(bias), [stride, stride], padding);
        let [pt, pl, pb, pr] = padding;
        let h = (x.s[2] + pt + pb).saturating_sub(kh) / stride + 1;
        let wd = (x.s[3] + pl + pr).saturating_sub(kw) / stride + 1;
        Ok(T {
            v,
            s: [x.s[0], cout, h, wd],
        })
    }

    /// `nn.GroupNorm(groups, C, eps=1e-6)` at `key`.
    pub fn group_norm(&mut self, key: &str, x: T) -> Result<T, PluginError> {
        let g = self.param(&format!("{key}.weight"))?;
        let b = self.param(&format!("{key}.bias"))?;
        let v = self
            .b
            .group_norm(key, x.v, g, b, self.groups, GROUP_NORM_EPS);
        Ok(T { v, s: x.s })
    }

    /// An element-wise activation node called `name`; `None` is the model's `act_fn`.
    pub fn activation(&mut self, name: &str, x: T, kind: Option<Activation>) -> T {
        let v = self.b.activation(name, x.v, kind.unwrap_or(self.act));
        T { v, s: x.s }
    }

    /// ResnetBlock2D without time embedding: `shortcut(x) + conv2(act(norm2(conv1(act(norm1(x))))))`.
    pub fn resnet(&mut self, key: &str, x: T, cout: usize) -> Result<T, PluginError> {
        let h = self.group_norm(&format!("{key}.norm1"), x)?;
        let h = self.activation(&format!("{key}.act1"), h, None);
        let h = self.conv(&format!("{key}.conv1"), h, 1, [1; 4])?;
        let h = self.group_norm(&format!("{key}.norm2"), h)?;
        let h = self.activation(&format!("{key}.act2"), h, None);
        let h = self.conv(&format!("{key}.conv2"), h, 1, [1; 4])?;
        let shortcut = if x.s[1] != cout {
            self.conv(&format!("{key}.conv_shortcut"), x, 1, [0; 4])?
        } else {
            x
        };
        let v = self.b.add(format!("{key}.add"), shortcut.v, h.v);
        Ok(T { v, s: h.s })
    }

    /// Single-head self-attention over the `H*W` positions with a residual connection
    /// (diffusers `Attention` with `heads = 1`, `group_norm`, `residual_connection=True`).
    pub fn attention(&mut self, key: &str, x: T) -> Result<T, PluginError> {
        let [n, c, h, w] = x.s;
        let hw = h * w;
        let normed = self.group_norm(&format!("{key}.group_norm"), x)?;
        let flat = self
            .b
            .reshape(format!("{key}.flatten"), normed.v, vec![n, c, hw]);
        let tokens = self
            .b
            .transpose(format!("{key}.to_tokens"), flat, vec![0, 2, 1]);
        let linear = |this: &mut Self, name: &str, input: ValueRef| {
            let wt = this.param(&format!("{key}.{name}.weight"))?;
            let bias = this.param(&format!("{key}.{name}.bias"))?;
            Ok::<_, PluginError>(
                this.b
                    .linear(format!("{key}.{name}"), input, wt, Some(bias)),
            )
        };
        let q = linear(self, "to_q", tokens)?;
        let k = linear(self, "to_k", tokens)?;
        let v = linear(self, "to_v", tokens)?;
        // softmax(q k^T / sqrt(C)): the scale is applied to q, which is H*W*C values instead
        // of (H*W)^2.
        let q = self
            .b
            .scale(format!("{key}.scale_q"), q, 1.0 / (c as f32).sqrt());
        let scores = self.b.matmul(format!("{key}.scores"), q, k, true);
        let probs = self.b.softmax(format!("{key}.softmax"), scores);
        let ctx = self.b.matmul(format!("{key}.context"), probs, v, false);
        let out = linear(self, "to_out.0", ctx)?;
        let chw = self
            .b
            .transpose(format!("{key}.from_tokens"), out, vec![0, 2, 1]);
        let img = self
            .b
            .reshape(format!("{key}.unflatten"), chw, vec![n, c, h, w]);
        let v = self.b.add(format!("{key}.residual"), img, x.v);
        Ok(T { v, s: x.s })
    }

    /// UNetMidBlock2D: resnet, optional attention, resnet.
    pub fn mid_block(&mut self, key: &str, x: T, attention: bool) -> Result<T, PluginError> {
        let c = x.s[1];
        let mut h = self.resnet(&format!("{key}.resnets.0"), x, c)?;
        if attention {
            h = self.attention(&format!("{key}.attentions.0"), h)?;
        }
        self.resnet(&format!("{key}.resnets.1"), h, c)
    }

    /// Downsample2D with `padding=0`: zero-pad right and bottom by one, then a 3x3 stride-2 conv.
    pub fn downsample(&mut self, key: &str, x: T) -> Result<T, PluginError> {
        self.conv(&format!("{key}.conv"), x, 2, [0, 0, 1, 1])
    }

    /// Upsample2D: nearest 2x, then a 3x3 conv with padding 1.
    pub fn upsample(&mut self, key: &str, x: T) -> Result<T, PluginError> {
        let up = self
            .b
            .upsample_nearest_2x(format!("{key}.interpolate"), x.v);
        let [n, c, h, w] = x.s;
        let up = T {
            v: up,
            s: [n, c, 2 * h, 2 * w],
        };
        self.conv(&format!("{key}.conv"), up, 1, [1; 4])
    }
}
