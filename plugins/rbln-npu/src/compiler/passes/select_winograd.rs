//! Chooses the Winograd F(4x4, 3x3) kernel for 3x3 stride-1 convolutions with constant weights
//! where a cost model says it is cheaper than the im2col GEMM. Their weights are stored either
//! in the Winograd taps layout (the size of the checkpoint weight; the 4x larger transformed
//! filters are built per call, see `kernels::winograd`) or, for layers of at most
//! [`STORED_FILTER_TILES`] tiles per call, as the transformed filters themselves: there the
//! per-call transform costs about a third of the layer (`examples/winograd_bench`: 8 of 22 ms for
//! 512 channels at 32x32, 8 of 63 ms at 64x64), so the memory buys time. Off when the compiler
//! option `winograd` is false.
//!
//! The cost model counts, in cycles of one core, the GEMM multiply-adds at 16 per cycle (two
//! 8-lane FMAs) including the padding of rows to `MR` and tiles to `NR`, and the transforms at
//! 4 element operations per cycle (gathers, scatters and the transform arithmetic).

use super::pass::{Pass, ProgressFn};
use crate::kernels::{gemm, winograd};
use crate::program::{Algo, Def, Layout, Program, Role, ValueId};
use plugin_api::graph::Op;
use plugin_api::PluginError;
use std::collections::HashMap;

/// See the module docs.
pub struct SelectWinograd;

/// Layers with at most this many 4x4 output tiles per call (one 32x32 output) store their
/// transformed filters.
pub const STORED_FILTER_TILES: usize = 64;

/// Estimated cycles of the im2col GEMM convolution of one image (`depth = c_in * KH * KW`).
pub fn im2col_gemm_cost(c_out: usize, depth: usize, pixels: usize) -> f64 {
    let rows = c_out.next_multiple_of(gemm::MR) as f64;
    rows * depth as f64 * pixels.next_multiple_of(gemm::NR) as f64 / 16.0
}

/// Estimated cycles of the Winograd convolution with `tiles` 4x4 output tiles.
pub fn winograd_cost(c_out: usize, c_in: usize, tiles: usize) -> f64 {
    let rows = c_out.next_multiple_of(gemm::MR) as f64;
    let t = tiles.next_multiple_of(gemm::NR) as f64;
    let gemm = 36.0 * rows * c_in as f64 * t / 16.0;
    // Input: gather 36 floats and ~100 transform operations per (channel, tile); output: ~70
    // operations and 16 stores per (channel, tile); filters: ~150 operations per (c_out, c_in).
    let transforms =
        (136.0 * c_in as f64 * t + 86.0 * c_out as f64 * t + 150.0 * (c_out * c_in) as f64) / 4.0;
    gemm + transforms
}

impl Pass for SelectWinograd {
    fn name(&self) -> &'static str {
        "SelectWinograd"
    }
    fn run(&self, p: &mut Program, progress: ProgressFn<'_>) -> Result<(), PluginError> {
        if !p.target.winograd {
            return Ok(());
        }
        let uses = p.uses();
        let candidates: Vec<usize> = (0..p.steps.len())
            .filter(|&s| {
                let st = &p.steps[s];
                let Op::Conv2d(c) = &st.op else { return false };
                let (Some(x), Some(w)) = (st.operand(Role::Input), st.operand(Role::Weight)) else {
                    return false;
                };
                let (xs, ws, os) = (
                    &p.values[x].shape,
                    &p.values[w].shape,
                    &p.values[st.output].shape,
                );
                let constant = matches!(p.values[w].def,
                    Def::Weight(i) if p.weights[i].layout == Layout::Plain);
                constant
                    && c.stride == [1, 1]
                    && ws.len() == 4
                    && ws[2..] == [3, 3]
                    && xs.len() == 4
                    && st.algo == Algo::Gemm
                    && {
                        let tiles = os[0] * os[2].div_ceil(4) * os[3].div_ceil(4);
                        winograd_cost(ws[0], ws[1], tiles)
                            < im2col_gemm_cost(ws[0], ws[1] * 9, os[2] * os[3]) * os[0] as f64
                    }
            })
            .collect();
        let total = candidates.len() as u64;
        let is_candidate = {
            let mut m = vec![false; p.steps.len()];
            candidates.iter().for_each(|&s| m[s] = true);
            m
        };
        // A weight several candidates share is converted (or copied) once.
        let mut converted: HashMap<ValueId, ValueId> = HashMap::new();
        for (k, s) in candidates.into_iter().enumerate() {
            progress("select winograd", k as u64, total);
            let slot = p.steps[s]
                .slot(Role::Weight)
                .expect("candidates have a weight");
            let v = p.steps[s].inputs[slot];
            if let Some(&nv) = converted.get(&v) {
                p.steps[s].set_read(slot, nv);
                p.steps[s].algo = Algo::WinogradF4;
                continue;
            }
            let Def::Weight(wi) = p.values[v].def else {
                continue;
            };
            let (rows, c_in) = (p.values[v].shape[0], p.values[v].shape[1]);
            let os = &p.values[p.steps[s].output].shape;
            let tiles = os[0] * os[2].div_ceil(4) * os[3].div_ceil(4);
            let mut data = winograd::pack_taps(&p.weights[wi].data, rows, c_in);
            let layout = if tiles <= STORED_FILTER_TILES {
                let mut u = vec![0.0; winograd::transformed_len(rows, c_in)];
                winograd::transform_filters(&data, rows, c_in, &mut u);
                data = u;
                Layout::WinogradFilters {
                    rows,
                    c_in,
                    mr: gemm::MR,
                }
            } else {
                Layout::WinogradTaps {
                    rows,
                    c_in,
                    mr: gemm::MR,
                }
            };
            let only_candidates = !p.is_output(v)
                && uses[v]
                    .iter()
                    .all(|&(st, k)| is_candidate[st] && p.steps[st].slot(Role::Weight) == Some(k));
            let nv = p.relayout_weight(v, data, layout, only_candidates, "winograd");
            p.steps[s].set_read(slot, nv);
            converted.insert(v, nv);
            p.steps[s].algo = Algo::WinogradF4;
        }
        progress("select winograd", total, total);
        p.compact();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_model_prefers_winograd_for_wide_layers_only() {
        // A VAE's 128-channel 256x256 convolution: Winograd is several times cheaper.
        let d = im2col_gemm_cost(128, 128 * 9, 256 * 256);
        let w = winograd_cost(128, 128, 64 * 64);
        assert!(w * 3.0 < d, "{w} vs {d}");
        // One input and one output channel: the transforms dominate.
        assert!(winograd_cost(1, 1, 64 * 64) > im2col_gemm_cost(1, 9, 256 * 256));
    }
}
