//! Built-in host ops of pipelines: image decode / encode, normalize / denormalize, latent
//! distribution sample / mode, latent scale / unscale, inpainting masks.
//!
//! Images between ops are `[1, C, H, W]` f32 tensors holding pixel values in `[0, 255]`
//! (`image_decode`), `[-1, 1]` after `normalize`, as diffusers' image processors use them.

use super::spec::Family;
use plugin_api::tensor::shape_str;
use plugin_api::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;
use std::sync::Arc;

/// A value flowing between steps.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Encoded image bytes.
    Bytes(Arc<Vec<u8>>),
    /// An f32 tensor.
    Tensor(Tensor),
}

impl Data {
    /// What it is, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Data::Bytes(_) => "encoded image bytes",
            Data::Tensor(_) => "a tensor",
        }
    }
}

/// The latent scaling a family's pipelines apply, with the model's `config.json` values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scaling {
    /// Which convention.
    pub family: Family,
    /// `scaling_factor`.
    pub scaling_factor: f64,
    /// `shift_factor` (SD3; required there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shift_factor: Option<f64>,
    /// `latents_mean` (SDXL; used only with `latents_std`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latents_mean: Option<Vec<f64>>,
    /// `latents_std` (SDXL; used only with `latents_mean`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latents_std: Option<Vec<f64>>,
}

/// A built-in op with its resolved parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `bytes` (PNG or JPEG) -> `image` `[1, channels, H, W]` in `[0, 255]`.
    ImageDecode {
        /// 3 (RGB) or 1 (grayscale).
        channels: usize,
    },
    /// `image` `[1, C, H, W]` in `[0, 255]` (C = 1 or 3) -> `bytes` (PNG; values rounded).
    ImageEncode,
    /// `x` in `[0, 255]` -> `y = x / 127.5 - 1` in `[-1, 1]`.
    Normalize,
    /// `x` in `[-1, 1]` -> `y = clamp(x / 2 + 0.5, 0, 1) * 255`.
    Denormalize,
    /// `mean`, `logvar` -> `z = mean + exp(0.5 * clamp(logvar, -30, 20)) * eps`, eps ~ N(0, 1)
    /// from ChaCha8 seeded with `seed` (the stream of rbln_vae's `DiagonalGaussian::sample`).
    LatentSample {
        /// The seed.
        seed: u64,
    },
    /// `mean` -> `z = mean`.
    LatentMode,
    /// `z` (the VAE's latent) -> `z` as the denoiser sees it.
    LatentScale(Scaling),
    /// `z` as the denoiser produces it -> `z` for the VAE's decoder.
    LatentUnscale(Scaling),
    /// `mask` `[1, C, H, W]` in `[0, 255]` -> `[1, 1, H, W]`: grayscale, `/ 255`, then 0 below
    /// 0.5 and 1 otherwise (diffusers' mask processor with binarize).
    MaskPrepare,
    /// `image` in `[-1, 1]`, `mask` `[1, 1, H, W]` -> `y = image * (mask < 0.5)` (the masked
    /// image of SD inpainting).
    MaskImage,
}

/// An op's name, ports and parameters as written in a manifest.
#[derive(Debug, Clone, Copy)]
pub struct OpSig {
    /// The name in `op:`.
    pub name: &'static str,
    /// Input ports.
    pub inputs: &'static [&'static str],
    /// Output ports.
    pub outputs: &'static [&'static str],
    /// Accepted `params`.
    pub params: &'static [&'static str],
}

/// Every built-in op.
pub const OPS: &[OpSig] = &[
    OpSig {
        name: "image_decode",
        inputs: &["bytes"],
        outputs: &["image"],
        params: &["channels"],
    },
    OpSig {
        name: "image_encode",
        inputs: &["image"],
        outputs: &["bytes"],
        params: &[],
    },
    OpSig {
        name: "normalize",
        inputs: &["x"],
        outputs: &["y"],
        params: &[],
    },
    OpSig {
        name: "denormalize",
        inputs: &["x"],
        outputs: &["y"],
        params: &[],
    },
    OpSig {
        name: "latent_sample",
        inputs: &["mean", "logvar"],
        outputs: &["z"],
        params: &["seed"],
    },
    OpSig {
        name: "latent_mode",
        inputs: &["mean"],
        outputs: &["z"],
        params: &[],
    },
    OpSig {
        name: "latent_scale",
        inputs: &["z"],
        outputs: &["z"],
        params: &["model", "family"],
    },
    OpSig {
        name: "latent_unscale",
        inputs: &["z"],
        outputs: &["z"],
        params: &["model", "family"],
    },
    OpSig {
        name: "mask_prepare",
        inputs: &["mask"],
        outputs: &["mask"],
        params: &[],
    },
    OpSig {
        name: "mask_image",
        inputs: &["image", "mask"],
        outputs: &["y"],
        params: &[],
    },
];

/// The signature of op `name`.
pub fn op_sig(name: &str) -> Option<&'static OpSig> {
    OPS.iter().find(|o| o.name == name)
}

impl Op {
    /// The op's name.
    pub fn name(&self) -> &'static str {
        match self {
            Op::ImageDecode { .. } => "image_decode",
            Op::ImageEncode => "image_encode",
            Op::Normalize => "normalize",
            Op::Denormalize => "denormalize",
            Op::LatentSample { .. } => "latent_sample",
            Op::LatentMode => "latent_mode",
            Op::LatentScale(_) => "latent_scale",
            Op::LatentUnscale(_) => "latent_unscale",
            Op::MaskPrepare => "mask_prepare",
            Op::MaskImage => "mask_image",
        }
    }

    /// Runs the op on its inputs (in the order of its signature's ports); returns its outputs
    /// in signature order. Errors say which port and what was wrong.
    pub fn run(&self, inputs: &[&Data]) -> Result<Vec<Data>, String> {
        let tensor = |i: usize| -> Result<&Tensor, String> {
            let sig = op_sig(self.name()).ok_or("unknown op")?;
            match inputs.get(i) {
                Some(Data::Tensor(t)) => Ok(t),
                Some(other) => Err(format!(
                    "input `{}` must be a tensor, got {}",
                    sig.inputs[i],
                    other.kind()
                )),
                None => Err(format!("input `{}` is missing", sig.inputs[i])),
            }
        };
        let out = match self {
            Op::ImageDecode { channels } => {
                let Some(Data::Bytes(bytes)) = inputs.first() else {
                    return Err("input `bytes` must be encoded image bytes (PNG or JPEG)".into());
                };
                Data::Tensor(decode_image(bytes, *channels)?)
            }
            Op::ImageEncode => Data::Bytes(Arc::new(encode_png(tensor(0)?)?)),
            Op::Normalize => Data::Tensor(map(tensor(0)?, |v| v / 127.5 - 1.0)),
            Op::Denormalize => {
                Data::Tensor(map(tensor(0)?, |v| (v / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0))
            }
            Op::LatentSample { seed } => {
                let (mean, logvar) = (tensor(0)?, tensor(1)?);
                same_shape(mean, "mean", logvar, "logvar")?;
                Data::Tensor(sample(mean, logvar, *seed))
            }
            Op::LatentMode => Data::Tensor(tensor(0)?.clone()),
            Op::LatentScale(s) => Data::Tensor(s.scale(tensor(0)?)?),
            Op::LatentUnscale(s) => Data::Tensor(s.unscale(tensor(0)?)?),
            Op::MaskPrepare => Data::Tensor(prepare_mask(tensor(0)?)?),
            Op::MaskImage => {
                let (image, mask) = (tensor(0)?, tensor(1)?);
                Data::Tensor(mask_image(image, mask)?)
            }
        };
        Ok(vec![out])
    }
}

fn map(t: &Tensor, f: impl Fn(f32) -> f32) -> Tensor {
    let data = t.data().iter().map(|&v| f(v)).collect();
    Tensor::new(t.shape(), data).expect("same shape")
}

fn same_shape(a: &Tensor, an: &str, b: &Tensor, bn: &str) -> Result<(), String> {
    if a.shape() == b.shape() {
        return Ok(());
    }
    Err(format!(
        "`{an}` has shape {} but `{bn}` has shape {}",
        shape_str(&a.shape()),
        shape_str(&b.shape())
    ))
}

fn image_dims(t: &Tensor, what: &str) -> Result<[usize; 4], String> {
    match t.shape()[..] {
        [b, c, h, w] => Ok([b, c, h, w]),
        ref s => Err(format!(
            "`{what}` must be [B, C, H, W], got shape {}",
            shape_str(s)
        )),
    }
}

/// Decodes PNG or JPEG bytes into `[1, channels, H, W]` with values in `[0, 255]`.
pub fn decode_image(bytes: &[u8], channels: usize) -> Result<Tensor, String> {
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| matches!(f, image::ImageFormat::Png | image::ImageFormat::Jpeg))
        .ok_or("the bytes are not a PNG or JPEG image")?;
    if !matches!(channels, 1 | 3) {
        return Err(format!(
            "image_decode: channels must be 1 or 3, got {channels}"
        ));
    }
    let img = crate::io::decode_image_bytes(bytes, format)
        .map_err(|e| format!("cannot decode the {format:?} image: {e}"))?;
    crate::io::image_to_tensor(img, channels, f32::from)
}

/// Encodes `[1, C, H, W]` (C = 1 or 3) with values in `[0, 255]` as PNG (rounded, clamped).
pub fn encode_png(t: &Tensor) -> Result<Vec<u8>, String> {
    let [b, c, h, w] = image_dims(t, "image")?;
    if b != 1 {
        return Err(format!(
            "a PNG holds one image, but `image` has a batch of {b} (shape {})",
            shape_str(&t.shape())
        ));
    }
    let color = match c {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        _ => return Err(format!("a PNG needs 1 or 3 channels, `image` has {c}")),
    };
    let data = t.data();
    let pixels: Vec<u8> = (0..c * h * w)
        .map(|i| data[(i % c) * h * w + i / c].round().clamp(0.0, 255.0) as u8)
        .collect();
    let mut out = Vec::new();
    let encoder = image::codecs::png::PngEncoder::new(&mut out);
    image::ImageEncoder::write_image(encoder, &pixels, w as u32, h as u32, color)
        .map_err(|e| format!("PNG encoding failed: {e}"))?;
    Ok(out)
}

fn sample(mean: &Tensor, logvar: &Tensor, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = mean
        .data()
        .iter()
        .zip(logvar.data())
        .map(|(&m, &l)| {
            let eps: f32 = StandardNormal.sample(&mut rng);
            m + (0.5 * l.clamp(-30.0, 20.0)).exp() * eps
        })
        .collect();
    Tensor::new(mean.shape(), data).expect("same shape as mean")
}

fn prepare_mask(mask: &Tensor) -> Result<Tensor, String> {
    let [b, c, h, w] = image_dims(mask, "mask")?;
    let plane = h * w;
    let data = mask.data();
    let mut out = Vec::with_capacity(b * plane);
    for n in 0..b {
        let item = &data[n * c * plane..(n + 1) * c * plane];
        for p in 0..plane {
            let gray = match c {
                1 => item[p],
                // PIL's convert("L"): L = R * 299/1000 + G * 587/1000 + B * 114/1000, rounded.
                3 => ((item[p] * 299.0 + item[plane + p] * 587.0 + item[2 * plane + p] * 114.0)
                    / 1000.0)
                    .round(),
                _ => return Err(format!("`mask` must have 1 or 3 channels, got {c}")),
            };
            out.push(if gray / 255.0 < 0.5 { 0.0 } else { 1.0 });
        }
    }
    Tensor::new(vec![b, 1, h, w], out).map_err(|e| e.message().to_string())
}

fn mask_image(image: &Tensor, mask: &Tensor) -> Result<Tensor, String> {
    let [b, c, h, w] = image_dims(image, "image")?;
    let [mb, mc, mh, mw] = image_dims(mask, "mask")?;
    if (mb, mc, mh, mw) != (b, 1, h, w) {
        return Err(format!(
            "`mask` must be [{b}, 1, {h}, {w}] for `image` of shape {}, got {}",
            shape_str(&image.shape()),
            shape_str(&mask.shape())
        ));
    }
    let (plane, m) = (h * w, mask.data());
    let data = image
        .data()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (n, p) = (i / (c * plane), i % plane);
            if m[n * plane + p] < 0.5 {
                v
            } else {
                0.0
            }
        })
        .collect();
    Ok(Tensor::new(image.shape(), data).expect("same shape"))
}

/// Per-channel `latents_mean` and `latents_std`.
type ChannelStats<'a> = (&'a [f64], &'a [f64]);

impl Scaling {
    fn channel_stats(&self, z: &Tensor) -> Result<Option<ChannelStats<'_>>, String> {
        let (Family::Sdxl, Some(mean), Some(std)) =
            (self.family, &self.latents_mean, &self.latents_std)
        else {
            return Ok(None);
        };
        let c = image_dims(z, "z")?[1];
        if mean.len() != c || std.len() != c {
            return Err(format!(
                "latents_mean has {} and latents_std {} values, but `z` has {c} channels",
                mean.len(),
                std.len()
            ));
        }
        Ok(Some((mean, std)))
    }

    fn per_channel(&self, z: &Tensor, f: impl Fn(f64, usize) -> f64) -> Result<Tensor, String> {
        let [_, c, h, w] = image_dims(z, "z")?;
        let data = z
            .data()
            .iter()
            .enumerate()
            .map(|(i, &v)| f(v as f64, (i / (h * w)) % c) as f32)
            .collect();
        Ok(Tensor::new(z.shape(), data).expect("same shape"))
    }

    /// The VAE's latent -> the denoiser's: SD `z * sf`; SD3 `(z - shift) * sf`; SDXL
    /// `(z - mean) * sf / std` when latents_mean and latents_std are set, else `z * sf`.
    pub fn scale(&self, z: &Tensor) -> Result<Tensor, String> {
        let sf = self.scaling_factor;
        match (self.family, self.channel_stats(z)?) {
            (Family::Sdxl, Some((mean, std))) => {
                self.per_channel(z, |v, ch| (v - mean[ch]) * sf / std[ch])
            }
            (Family::Sd3, _) => {
                let shift = self.shift_factor.ok_or("sd3 scaling needs shift_factor")?;
                self.per_channel(z, |v, _| (v - shift) * sf)
            }
            _ => self.per_channel(z, |v, _| v * sf),
        }
    }

    /// The inverse of [`Scaling::scale`]: SD `z / sf`; SD3 `z / sf + shift`; SDXL
    /// `z * std / sf + mean` when both are set, else `z / sf`.
    pub fn unscale(&self, z: &Tensor) -> Result<Tensor, String> {
        let sf = self.scaling_factor;
        match (self.family, self.channel_stats(z)?) {
            (Family::Sdxl, Some((mean, std))) => {
                self.per_channel(z, |v, ch| v * std[ch] / sf + mean[ch])
            }
            (Family::Sd3, _) => {
                let shift = self.shift_factor.ok_or("sd3 scaling needs shift_factor")?;
                self.per_channel(z, |v, _| v / sf + shift)
            }
            _ => self.per_channel(z, |v, _| v / sf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        Tensor::new(shape, data).unwrap()
    }

    #[test]
    fn normalize_and_denormalize_clamp() {
        let x = Data::Tensor(t(vec![1, 1, 1, 3], vec![0.0, 127.5, 255.0]));
        let y = Op::Normalize.run(&[&x]).unwrap();
        assert_eq!(
            y[0],
            Data::Tensor(t(vec![1, 1, 1, 3], vec![-1.0, 0.0, 1.0]))
        );
        let z = Data::Tensor(t(vec![1, 1, 1, 3], vec![-3.0, 0.0, 2.0]));
        let y = Op::Denormalize.run(&[&z]).unwrap();
        assert_eq!(
            y[0],
            Data::Tensor(t(vec![1, 1, 1, 3], vec![0.0, 127.5, 255.0]))
        );
    }

    #[test]
    fn png_round_trip_and_jpeg_decode() {
        let img = t(vec![1, 3, 1, 2], vec![0.0, 255.0, 10.4, 10.6, 300.0, -5.0]);
        let png = encode_png(&img).unwrap();
        let back = decode_image(&png, 3).unwrap();
        assert_eq!(back.data(), &[0.0, 255.0, 10.0, 11.0, 255.0, 0.0]);
        let mut jpeg = Vec::new();
        let gray = image::GrayImage::from_pixel(8, 8, image::Luma([200u8]));
        gray.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        let decoded = decode_image(&jpeg, 1).unwrap();
        assert_eq!(decoded.shape(), vec![1, 1, 8, 8]);
        assert!(decoded.data().iter().all(|&v| (v - 200.0).abs() <= 2.0));
        let e = decode_image(b"GIF89a....", 3).unwrap_err();
        assert!(e.contains("not a PNG or JPEG"), "{e}");
    }

    #[test]
    fn an_image_is_refused_by_its_header_size_before_it_is_decoded() {
        // 870 bytes found by the image fuzz target: a JPEG whose header says 16140 x 14856;
        // decoding it took 4 GiB and 28 s before the header was checked first.
        let bomb = include_bytes!(
            "../../../tests/fuzz/regressions/image/jpeg-16140x14856-in-870-bytes.jpg"
        );
        let e = decode_image(bomb, 3).unwrap_err();
        assert!(e.contains("16140 x 14856 pixels"), "{e}");
        assert!(e.contains(&crate::io::MAX_IMAGE_PIXELS.to_string()), "{e}");
        // A black PNG just over the limit (72 MB of pixels, a few hundred KB of file).
        let mut png = Vec::new();
        image::GrayImage::new(9000, 8000)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let e = decode_image(&png, 1).unwrap_err();
        assert!(e.contains("9000 x 8000 pixels"), "{e}");
    }

    #[test]
    fn mask_binarizes_and_masks() {
        let mask = t(vec![1, 1, 1, 3], vec![0.0, 127.0, 128.0]);
        let m = prepare_mask(&mask).unwrap();
        assert_eq!(m.data(), &[0.0, 0.0, 1.0]);
        let image = t(vec![1, 2, 1, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let y = mask_image(&image, &m).unwrap();
        assert_eq!(y.data(), &[1.0, 2.0, 0.0, 4.0, 5.0, 0.0]);
        let e = mask_image(&image, &t(vec![1, 1, 1, 2], vec![0.0; 2])).unwrap_err();
        assert!(e.contains("`mask` must be [1, 1, 1, 3]"), "{e}");
    }

    #[test]
    fn scaling_conventions_by_hand() {
        let z = t(vec![1, 2, 1, 1], vec![1.0, 2.0]);
        let sd = Scaling {
            family: Family::Sd,
            scaling_factor: 0.5,
            shift_factor: Some(7.0),
            latents_mean: None,
            latents_std: None,
        };
        assert_eq!(sd.scale(&z).unwrap().data(), &[0.5, 1.0]);
        let sd3 = Scaling {
            family: Family::Sd3,
            shift_factor: Some(1.0),
            ..sd.clone()
        };
        assert_eq!(sd3.scale(&z).unwrap().data(), &[0.0, 0.5]);
        assert_eq!(sd3.unscale(&z).unwrap().data(), &[3.0, 5.0]);
        let xl = Scaling {
            family: Family::Sdxl,
            latents_mean: Some(vec![1.0, 0.0]),
            latents_std: Some(vec![0.5, 2.0]),
            ..sd.clone()
        };
        assert_eq!(xl.scale(&z).unwrap().data(), &[0.0, 0.5]);
        assert_eq!(xl.unscale(&z).unwrap().data(), &[2.0, 8.0]);
        let bad = t(vec![1, 3, 1, 1], vec![0.0; 3]);
        assert!(xl.scale(&bad).unwrap_err().contains("3 channels"));
    }

    #[test]
    fn sample_is_seeded_and_ports_are_checked() {
        let mean = Data::Tensor(t(vec![1, 1, 1, 4], vec![0.0; 4]));
        let logvar = Data::Tensor(t(vec![1, 1, 1, 4], vec![0.0; 4]));
        let a = Op::LatentSample { seed: 3 }.run(&[&mean, &logvar]).unwrap();
        let b = Op::LatentSample { seed: 3 }.run(&[&mean, &logvar]).unwrap();
        let c = Op::LatentSample { seed: 4 }.run(&[&mean, &logvar]).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let bytes = Data::Bytes(Arc::new(vec![1]));
        let e = Op::Normalize.run(&[&bytes]).unwrap_err();
        assert!(e.contains("input `x` must be a tensor"), "{e}");
    }
}
