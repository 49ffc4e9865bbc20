//! Tiled encode and decode, as diffusers' `AutoencoderKL.enable_tiling()`: an input larger than
//! the tile in either dimension is cut into tiles that start every `overlap` pixels (edge tiles
//! are cut short by the input's border), each tile runs alone, then each tile is blended into
//! the tile above it (`blend_v`) and the tile to its left (`blend_h`) with linear ramps over
//! `blend_extent` rows or columns, in place and in row-major tile order, and the tiles, cropped
//! to `row_limit`, are joined.

use plugin_api::tensor::checked_numel;
use plugin_api::{PluginError, Tensor};
use serde_json::{json, Value};

/// How tiles are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileMode {
    /// diffusers' blending (the default).
    Blend,
}

/// The rbln_config `tiling` field: `true` (defaults), `false`, or an object with
/// `tile_sample_min_size` (default: config.json's `sample_size`, as in diffusers),
/// `tile_overlap_factor` (default 0.25) and `mode` (`"blend"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Tiling {
    /// Whether tiling is on.
    pub enabled: bool,
    /// The tile side in pixels; `None` until resolved from config.json.
    pub tile_sample_min_size: Option<usize>,
    /// The fraction of a tile that overlaps its neighbour.
    pub tile_overlap_factor: f64,
    /// How tiles are joined.
    pub mode: TileMode,
}

fn invalid(m: String) -> PluginError {
    PluginError::invalid(format!("tiling: {m}"))
}

impl Tiling {
    /// Tiling off.
    pub fn off() -> Tiling {
        Tiling {
            enabled: false,
            tile_sample_min_size: None,
            tile_overlap_factor: 0.25,
            mode: TileMode::Blend,
        }
    }

    /// Parses the `tiling` field.
    pub fn from_json(v: &Value) -> Result<Tiling, PluginError> {
        let mut t = Tiling::off();
        match v {
            Value::Bool(b) => t.enabled = *b,
            Value::Object(m) => {
                t.enabled = true;
                for (k, v) in m {
                    match k.as_str() {
                        "tile_sample_min_size" if !v.is_null() => {
                            t.tile_sample_min_size =
                                Some(v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                                    invalid(format!(
                                        "tile_sample_min_size must be a positive integer, got {v}"
                                    ))
                                })? as usize)
                        }
                        "tile_sample_min_size" => {}
                        "tile_overlap_factor" => {
                            t.tile_overlap_factor = v
                                .as_f64()
                                .filter(|f| (0.0..1.0).contains(f))
                                .ok_or_else(|| {
                                    invalid(format!(
                                        "tile_overlap_factor must be a number in [0, 1), got {v}"
                                    ))
                                })?
                        }
                        "mode" => match v.as_str() {
                            Some("blend") => t.mode = TileMode::Blend,
                            Some("sync") => {
                                return Err(PluginError::unsupported(
                                    "tiling: mode \"sync\" is not implemented in this build; use \"blend\"",
                                ))
                            }
                            _ => {
                                return Err(invalid(format!(
                                    "mode must be \"blend\", got {v}"
                                )))
                            }
                        },
                        other => {
                            return Err(invalid(format!(
                                "unknown key '{other}' (accepted: tile_sample_min_size, \
                                 tile_overlap_factor, mode)"
                            )))
                        }
                    }
                }
            }
            other => {
                return Err(invalid(format!(
                    "must be true, false or an object, got {other}"
                )))
            }
        }
        Ok(t)
    }

    /// As stored in `rbln_config.json`: `false`, or the object with every field resolved.
    pub fn to_json(&self) -> Value {
        if !self.enabled {
            return json!(false);
        }
        json!({
            "tile_sample_min_size": self.tile_sample_min_size,
            "tile_overlap_factor": self.tile_overlap_factor,
            "mode": "blend",
        })
    }

    /// Resolves the default tile size and checks the sizes against the scale factor `vsf`:
    /// the tile is a positive multiple of it and tiles start at multiples of it.
    pub fn resolve(&mut self, default_size: usize, vsf: usize) -> Result<(), PluginError> {
        if !self.enabled {
            return Ok(());
        }
        let t = *self.tile_sample_min_size.get_or_insert(default_size);
        if !t.is_multiple_of(vsf) {
            return Err(invalid(format!(
                "tile_sample_min_size {t} must be a multiple of vae_scale_factor ({vsf})"
            )));
        }
        let g = self.geometry(vsf);
        if g.encode.step == 0 || !g.encode.step.is_multiple_of(vsf) || g.decode.step == 0 {
            return Err(invalid(format!(
                "tile_sample_min_size {t} with tile_overlap_factor {} starts tiles every {} \
                 pixels ({} latent pixels), which must be a positive multiple of \
                 vae_scale_factor ({vsf})",
                self.tile_overlap_factor, g.encode.step, g.decode.step
            )));
        }
        Ok(())
    }

    /// The tile geometry of encode and decode (the tile size must be resolved).
    pub fn geometry(&self, vsf: usize) -> Geometry {
        let t = self.tile_sample_min_size.unwrap_or(vsf);
        let tl = t / vsf;
        let f = self.tile_overlap_factor;
        // Python's int() of the same double products, as diffusers computes them.
        let trunc = |a: usize, b: f64| (a as f64 * b) as usize;
        Geometry {
            encode: Tiles {
                tile: t,
                step: trunc(t, 1.0 - f),
                blend: trunc(tl, f),
                keep: tl - trunc(tl, f),
            },
            decode: Tiles {
                tile: tl,
                step: trunc(tl, 1.0 - f),
                blend: trunc(t, f),
                keep: t - trunc(t, f),
            },
        }
    }
}

/// The tiles of encode and decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Image tiles -> latent tiles.
    pub encode: Tiles,
    /// Latent tiles -> image tiles.
    pub decode: Tiles,
}

/// One direction's tiles: input tile side and start step, output blend extent and crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiles {
    /// Input tile side (`tile_sample_min_size` or `tile_latent_min_size`).
    pub tile: usize,
    /// Tiles start every `step` input pixels (`overlap_size`).
    pub step: usize,
    /// Output rows / columns blended (`blend_extent`).
    pub blend: usize,
    /// Output rows / columns kept of each tile (`row_limit`).
    pub keep: usize,
}

/// A `[B, C, H, W]` tensor's region `rows x cols`.
fn crop(x: &Tensor, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) -> Tensor {
    let s = x.shape();
    let (w, d) = (s[3], x.data());
    let mut out = Vec::with_capacity(s[0] * s[1] * rows.len() * cols.len());
    for plane in 0..s[0] * s[1] {
        let base = plane * s[2] * w;
        for r in rows.clone() {
            out.extend_from_slice(&d[base + r * w + cols.start..base + r * w + cols.end]);
        }
    }
    Tensor::new(vec![s[0], s[1], rows.len(), cols.len()], out).expect("crop sizes match")
}

/// `b[.., y, ..] = a[.., ah - e + y, ..] * (1 - y / e) + b[.., y, ..] * (y / e)` for the first
/// `e = min(ah, bh, extent)` rows (`vertical`) or columns of `b`.
fn blend(a: &Tensor, b: &mut Tensor, extent: usize, vertical: bool) {
    let (sa, sb) = (a.shape(), b.shape());
    let (ax, bx) = if vertical {
        (sa[2], sb[2])
    } else {
        (sa[3], sb[3])
    };
    let e = extent.min(ax).min(bx);
    let (aw, bw, bh) = (sa[3], sb[3], sb[2]);
    let ah = sa[2];
    let a = a.data();
    let planes = sb[0] * sb[1];
    let b = b.data_mut();
    for y in 0..e {
        let wa = (1.0 - y as f64 / e as f64) as f32;
        let wb = (y as f64 / e as f64) as f32;
        for p in 0..planes {
            if vertical {
                let (ra, rb) = (p * ah * aw + (ah - e + y) * aw, p * bh * bw + y * bw);
                for c in 0..bw {
                    b[rb + c] = a[ra + c] * wa + b[rb + c] * wb;
                }
            } else {
                for r in 0..bh {
                    let (ia, ib) = (p * ah * aw + r * aw + aw - e + y, p * bh * bw + r * bw + y);
                    b[ib] = a[ia] * wa + b[ib] * wb;
                }
            }
        }
    }
}

/// Runs `run` over the tiles of `x: [B, C, H, W]` with geometry `g` and joins the results as
/// diffusers' `_tiled_encode` / `tiled_decode` do. `run` maps a `[B, C, h, w]` tile to a
/// `[B, C', h * s, w * s]` tile for one scale `s`.
pub fn run_tiled(
    x: &Tensor,
    g: Tiles,
    mut run: impl FnMut(&Tensor) -> Result<Tensor, PluginError>,
) -> Result<Tensor, PluginError> {
    let s = x.shape();
    let (h, w) = (s[2], s[3]);
    let starts = |n: usize| (0..n).step_by(g.step).collect::<Vec<_>>();
    let (ri, ci) = (starts(h), starts(w));
    let mut rows: Vec<Vec<Tensor>> = Vec::with_capacity(ri.len());
    for &i in &ri {
        let mut row = Vec::with_capacity(ci.len());
        for &j in &ci {
            let tile = crop(x, i..(i + g.tile).min(h), j..(j + g.tile).min(w));
            row.push(run(&tile)?);
        }
        rows.push(row);
    }
    for i in 0..rows.len() {
        for j in 0..rows[i].len() {
            if i > 0 {
                let (above, rest) = rows.split_at_mut(i);
                blend(&above[i - 1][j], &mut rest[0][j], g.blend, true);
            }
            if j > 0 {
                let (left, rest) = rows[i].split_at_mut(j);
                blend(&left[j - 1], &mut rest[0], g.blend, false);
            }
        }
    }
    let first = rows[0][0].shape();
    let (b, c) = (first[0], first[1]);
    let heights: Vec<usize> = rows.iter().map(|r| r[0].shape()[2].min(g.keep)).collect();
    let widths: Vec<usize> = rows[0].iter().map(|t| t.shape()[3].min(g.keep)).collect();
    let (oh, ow) = (heights.iter().sum::<usize>(), widths.iter().sum::<usize>());
    let n = checked_numel(&[b, c, oh, ow])
        .ok_or_else(|| PluginError::invalid("tiled output is too large"))?;
    let mut out = vec![0.0f32; n];
    let mut y0 = 0;
    for (row, &th) in rows.iter().zip(&heights) {
        let mut x0 = 0;
        for (tile, &tw) in row.iter().zip(&widths) {
            let ts = tile.shape();
            let d = tile.data();
            for p in 0..b * c {
                for r in 0..th {
                    let src = p * ts[2] * ts[3] + r * ts[3];
                    let dst = p * oh * ow + (y0 + r) * ow + x0;
                    out[dst..dst + tw].copy_from_slice(&d[src..src + tw]);
                }
            }
            x0 += tw;
        }
        y0 += th;
    }
    Tensor::new(vec![b, c, oh, ow], out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_is_diffusers() {
        // SD: tile 512, overlap 0.25 -> encode tiles every 384 px, latent blend 16, keep 48;
        // decode tiles every 48 latent px, blend 128, keep 384.
        let mut t = Tiling::from_json(&json!(true)).unwrap();
        t.resolve(512, 8).unwrap();
        let g = t.geometry(8);
        assert_eq!(
            (g.encode.step, g.encode.blend, g.encode.keep),
            (384, 16, 48)
        );
        assert_eq!(
            (g.decode.tile, g.decode.step, g.decode.blend, g.decode.keep),
            (64, 48, 128, 384)
        );
        let mut bad = Tiling::from_json(&json!({"tile_sample_min_size": 20})).unwrap();
        assert!(bad
            .resolve(512, 8)
            .unwrap_err()
            .message()
            .contains("multiple"));
        assert!(Tiling::from_json(&json!({"mode": "sync"})).is_err());
        assert!(Tiling::from_json(&json!({"tile_overlap_factor": 1.0})).is_err());
        assert!(Tiling::from_json(&json!({"size": 1}))
            .unwrap_err()
            .message()
            .contains("'size'"));
    }

    /// With an identity per tile and no blending, tiling returns the input.
    #[test]
    fn identity_tiles_rebuild_the_input() {
        let x = Tensor::new(vec![1, 2, 7, 9], (0..126).map(|v| v as f32).collect()).unwrap();
        let g = Tiles {
            tile: 4,
            step: 3,
            blend: 0,
            keep: 3,
        };
        let y = run_tiled(&x, g, |t| Ok(t.clone())).unwrap();
        assert_eq!(y, x);
    }
}
