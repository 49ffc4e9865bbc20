//! The two graphs of an `AutoencoderKL`, as diffusers' `Encoder` / `Decoder` forward passes.
//!
//! * `encoder`: input `x: [B, in_channels, H, W]` -> output
//!   `moments: [B, 2 * latent_channels, H / vsf, W / vsf]` = `quant_conv(encoder(x))`.
//! * `decoder`: input `z: [B, latent_channels, H / vsf, W / vsf]` -> output
//!   `sample: [B, out_channels, H, W]` = `decoder(post_quant_conv(z))`.

use crate::blocks::Blocks;
use crate::model::AutoencoderKL;
use plugin_api::graph::{Activation, Graph};
use plugin_api::PluginError;

/// Name of the encoder graph, its input and its output.
pub const ENCODER: (&str, &str, &str) = ("encoder", "x", "moments");
/// Name of the decoder graph, its input and its output.
pub const DECODER: (&str, &str, &str) = ("decoder", "z", "sample");

fn check_size(model: &AutoencoderKL, batch: usize, h: usize, w: usize) -> Result<(), PluginError> {
    let vsf = model.config.vae_scale_factor();
    if batch == 0 || h == 0 || w == 0 || !h.is_multiple_of(vsf) || !w.is_multiple_of(vsf) {
        return Err(PluginError::invalid(format!(
            "cannot build a VAE graph for batch {batch} and image size {h}x{w}: the batch must \
             be positive and height and width positive multiples of vae_scale_factor ({vsf})"
        )));
    }
    Ok(())
}

fn blocks<'a>(model: &'a AutoencoderKL, name: &str) -> Blocks<'a> {
    let c = &model.config;
    Blocks::new(name, model.weights(), c.norm_num_groups, c.act_fn)
}

/// Builds and validates the encoder graph for images of `batch x in_channels x h x w`.
pub fn build_encoder(
    model: &AutoencoderKL,
    batch: usize,
    h: usize,
    w: usize,
) -> Result<Graph, PluginError> {
    check_size(model, batch, h, w)?;
    let c = &model.config;
    let boc = &c.block_out_channels;
    let mut g = blocks(model, ENCODER.0);
    let x = g.input(ENCODER.1, [batch, c.in_channels, h, w]);
    let mut x = g.conv("encoder.conv_in", x, 1, [1; 4])?;
    for (i, &cout) in boc.iter().enumerate() {
        for j in 0..c.layers_per_block {
            x = g.resnet(&format!("encoder.down_blocks.{i}.resnets.{j}"), x, cout)?;
        }
        if i + 1 < boc.len() {
            x = g.downsample(&format!("encoder.down_blocks.{i}.downsamplers.0"), x)?;
        }
    }
    x = g.mid_block("encoder.mid_block", x, c.mid_block_add_attention)?;
    x = g.group_norm("encoder.conv_norm_out", x)?;
    x = g.activation("encoder.conv_act", x, Some(Activation::Silu));
    x = g.conv("encoder.conv_out", x, 1, [1; 4])?;
    if c.use_quant_conv {
        x = g.conv("quant_conv", x, 1, [0; 4])?;
    }
    g.finish(ENCODER.2, x)
}

/// Builds and validates the decoder graph producing images of `batch x out_channels x h x w`
/// (its input is `[batch, latent_channels, h / vsf, w / vsf]`).
pub fn build_decoder(
    model: &AutoencoderKL,
    batch: usize,
    h: usize,
    w: usize,
) -> Result<Graph, PluginError> {
    check_size(model, batch, h, w)?;
    let c = &model.config;
    let vsf = c.vae_scale_factor();
    let mut g = blocks(model, DECODER.0);
    let mut x = g.input(DECODER.1, [batch, c.latent_channels, h / vsf, w / vsf]);
    if c.use_post_quant_conv {
        x = g.conv("post_quant_conv", x, 1, [0; 4])?;
    }
    x = g.conv("decoder.conv_in", x, 1, [1; 4])?;
    x = g.mid_block("decoder.mid_block", x, c.mid_block_add_attention)?;
    let n = c.block_out_channels.len();
    for (i, &cout) in c.block_out_channels.iter().rev().enumerate() {
        for j in 0..=c.layers_per_block {
            x = g.resnet(&format!("decoder.up_blocks.{i}.resnets.{j}"), x, cout)?;
        }
        if i + 1 < n {
            x = g.upsample(&format!("decoder.up_blocks.{i}.upsamplers.0"), x)?;
        }
    }
    x = g.group_norm("decoder.conv_norm_out", x)?;
    x = g.activation("decoder.conv_act", x, Some(Activation::Silu));
    x = g.conv("decoder.conv_out", x, 1, [1; 4])?;
    g.finish(DECODER.2, x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random_weights, tiny_config};
    use plugin_api::graph::Op;

    fn model(overrides: &str) -> AutoencoderKL {
        let c = tiny_config(overrides);
        let w = random_weights(&c, 7);
        AutoencoderKL::new(c, w).unwrap()
    }

    fn out_shape(g: &Graph) -> Vec<usize> {
        let shapes = g.infer_shapes().unwrap();
        g.value_shape(g.outputs[0].value, &shapes).to_vec()
    }

    #[test]
    fn tiny_graphs_validate_with_expected_shapes() {
        let m = model("{}");
        let e = build_encoder(&m, 2, 16, 24).unwrap();
        e.validate().unwrap();
        assert_eq!(e.inputs[0].shape, vec![2, 3, 16, 24]);
        assert_eq!(e.outputs[0].name, "moments");
        assert_eq!(out_shape(&e), vec![2, 4, 8, 12]);
        let d = build_decoder(&m, 2, 16, 24).unwrap();
        assert_eq!(d.inputs[0].name, "z");
        assert_eq!(d.inputs[0].shape, vec![2, 2, 8, 12]);
        assert_eq!(out_shape(&d), vec![2, 3, 16, 24]);
        // Every weight is used exactly once across the two graphs.
        let used = e.constants.len() + d.constants.len();
        assert_eq!(used, m.weights().len());
    }

    #[test]
    fn node_names_follow_checkpoint_keys() {
        let m = model("{}");
        let e = build_encoder(&m, 1, 16, 16).unwrap();
        let names: Vec<&str> = e.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names[0], "encoder.conv_in");
        assert!(names.contains(&"encoder.down_blocks.0.downsamplers.0.conv"));
        assert!(names.contains(&"encoder.mid_block.attentions.0.to_q"));
        assert_eq!(*names.last().unwrap(), "quant_conv");
        let down = e
            .nodes
            .iter()
            .find(|n| n.name == "encoder.down_blocks.0.downsamplers.0.conv")
            .unwrap();
        match &down.op {
            Op::Conv2d(c) => {
                assert_eq!(c.stride, [2, 2]);
                assert_eq!(c.padding, [0, 0, 1, 1]);
            }
            other => panic!("downsampler is {other:?}"),
        }
        let gn = e
            .nodes
            .iter()
            .find(|n| n.name == "encoder.conv_norm_out")
            .unwrap();
        assert!(matches!(&gn.op, Op::GroupNorm(g) if g.eps == 1e-6 && g.num_groups == 4));
        let d = build_decoder(&m, 1, 16, 16).unwrap();
        assert_eq!(d.nodes[0].name, "post_quant_conv");
        assert!(d
            .nodes
            .iter()
            .any(|n| n.name == "decoder.up_blocks.0.upsamplers.0.interpolate"));
        assert_eq!(d.nodes.last().unwrap().name, "decoder.conv_out");
    }

    #[test]
    fn several_configs_validate() {
        for (overrides, size) in [
            (
                r#"{"mid_block_add_attention": false, "use_quant_conv": false, "use_post_quant_conv": false}"#,
                16,
            ),
            (
                r#"{"layers_per_block": 2, "act_fn": "gelu", "latent_channels": 16}"#,
                8,
            ),
            (
                r#"{"block_out_channels": [8, 8, 16], "down_block_types": ["DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D"],
                 "up_block_types": ["UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D"], "in_channels": 1, "out_channels": 4}"#,
                8,
            ),
            (
                r#"{"block_out_channels": [8], "down_block_types": ["DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D"]}"#,
                5,
            ),
        ] {
            let m = model(overrides);
            let c = &m.config;
            let vsf = c.vae_scale_factor();
            let e = build_encoder(&m, 1, size, size).unwrap();
            assert_eq!(
                out_shape(&e),
                vec![1, 2 * c.latent_channels, size / vsf, size / vsf]
            );
            let d = build_decoder(&m, 1, size, size).unwrap();
            assert_eq!(out_shape(&d), vec![1, c.out_channels, size, size]);
            assert_eq!(
                e.constants.len() + d.constants.len(),
                m.weights().len(),
                "{overrides}"
            );
        }
    }

    #[test]
    fn sizes_must_be_multiples_of_the_scale_factor() {
        let m = model("{}");
        let e = build_encoder(&m, 1, 15, 16).unwrap_err();
        assert!(
            e.message().contains("15x16") && e.message().contains("(2)"),
            "{e}"
        );
        assert!(build_decoder(&m, 0, 16, 16).is_err());
    }
}
