//! What a pipeline kind implies: the VAE's rbln_config (as optimum-rbln derives it) and the
//! default step graph.

use super::spec::{Family, Kind, PipelineEntry, PortType, StepEntry, Task};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The VAE config.json fields derivation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeFacts {
    /// `2^(len(block_out_channels) - 1)`.
    pub vae_scale_factor: usize,
    /// `force_upcast` (diffusers' default: true).
    pub force_upcast: bool,
}

/// A derivation error: the message and the pipeline key to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeriveError {
    /// The key (within the pipeline entry) at fault.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn derr(key: &str, message: String) -> DeriveError {
    DeriveError {
        key: key.to_string(),
        message,
    }
}

/// `N` or `[H, W]` as `(H, W)`.
fn size_of(v: &Value) -> Option<(u64, u64)> {
    match v {
        Value::Number(n) => n.as_u64().filter(|&n| n > 0).map(|n| (n, n)),
        Value::Array(a) => match a[..] {
            [ref h, ref w] => Some((h.as_u64()?, w.as_u64()?)).filter(|(h, w)| *h > 0 && *w > 0),
            _ => None,
        },
        _ => None,
    }
}

fn show((h, w): (u64, u64)) -> String {
    format!("[{h}, {w}]")
}

/// The pipeline-level image size: `height`/`width` or `image_size` (conflicts are errors).
pub fn pipeline_size(p: &PipelineEntry) -> Result<Option<(u64, u64)>, DeriveError> {
    if let (Some(n), true) = (
        p.noise_model_sample_size,
        p.height.is_some() || p.image_size.is_some(),
    ) {
        return Err(derr(
            "noise_model_sample_size",
            format!(
                "noise_model_sample_size {n} derives the image size, which the pipeline also \
                 sets; give one of them"
            ),
        ));
    }
    let hw = match (p.height, p.width) {
        (Some(h), Some(w)) => Some((h.get() as u64, w.get() as u64)),
        (None, None) => None,
        (Some(_), None) => return Err(derr("height", "height is given without width".into())),
        (None, Some(_)) => return Err(derr("width", "width is given without height".into())),
    };
    let image_size = match &p.image_size {
        None => None,
        Some(v) => Some(size_of(v).ok_or_else(|| {
            derr(
                "image_size",
                format!("image_size must be N or [H, W] with positive integers, got {v}"),
            )
        })?),
    };
    match (hw, image_size) {
        (Some(a), Some(b)) if a != b => Err(derr(
            "image_size",
            format!(
                "image_size {} conflicts with height/width {}",
                show(b),
                show(a)
            ),
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// The VAE rbln_config of a pipeline of `kind`: batch_size (the pipeline's; guidance doubles
/// only the denoiser's), sample_size (the pipeline's size, else the noise model's sample_size x
/// vae_scale_factor), uses_encoder (img2img / inpaint), dtype float32 for the SDXL family with
/// force_upcast; then the model's `rbln_config` and the pipeline's `vae:` values win. A user
/// sample_size that contradicts the pipeline size, or `uses_encoder: false` where the kind
/// needs the encoder, is an error naming both.
pub fn vae_rbln_config(
    p: &PipelineEntry,
    kind: Kind,
    model: &str,
    model_config: &Map<String, Value>,
    facts: &VaeFacts,
) -> Result<Map<String, Value>, DeriveError> {
    let size = pipeline_size(p)?;
    let mut user = model_config.clone();
    for (k, v) in &p.vae {
        user.insert(k.clone(), v.clone());
    }
    let vae_key = |k: &str| {
        if p.vae.contains_key(k) {
            format!("vae.{k}")
        } else {
            format!("models[\"{model}\"].rbln_config.{k}")
        }
    };
    if let (Some(size), Some(v)) = (size, user.get("sample_size")) {
        let theirs = size_of(v);
        if theirs != Some(size) {
            let given = if p.image_size.is_some() {
                "image_size"
            } else {
                "height/width"
            };
            return Err(derr(
                "sample_size",
                format!(
                    "{} {v} conflicts with the pipeline's {given} {}",
                    vae_key("sample_size"),
                    show(size)
                ),
            ));
        }
    }
    if kind.uses_encoder() && user.get("uses_encoder") == Some(&Value::Bool(false)) {
        return Err(derr(
            "uses_encoder",
            format!(
                "{} is false, but {} encodes images and needs the VAE encoder; drop it or set it \
                 to true",
                vae_key("uses_encoder"),
                kind.name()
            ),
        ));
    }
    let (h, w) = size.unwrap_or_else(|| {
        let latent = p
            .noise_model_sample_size
            .map_or(kind.noise_model_sample_size(), |n| n.get());
        let side = (latent * facts.vae_scale_factor) as u64;
        (side, side)
    });
    let mut derived = Map::new();
    derived.insert(
        "batch_size".into(),
        json!(p.batch_size.map_or(1, |b| b.get())),
    );
    derived.insert("sample_size".into(), json!([h, w]));
    if kind.uses_encoder() {
        derived.insert("uses_encoder".into(), json!(true));
    }
    if kind.family() == Family::Sdxl && facts.force_upcast {
        derived.insert("dtype".into(), json!("float32"));
    }
    for (k, v) in user {
        derived.insert(k, v);
    }
    Ok(derived)
}

fn step(
    name: &str,
    op: &str,
    inputs: &[(&str, &str)],
    outputs: &[(&str, &str)],
    params: Value,
) -> StepEntry {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let (op, model, method) = match op.split_once('.') {
        Some((model, method)) => (None, Some(model.to_string()), Some(method.to_string())),
        None => (Some(op.to_string()), None, None),
    };
    StepEntry {
        name: name.to_string(),
        op,
        model,
        method,
        inputs: map(inputs),
        outputs: map(outputs),
        params: match params {
            Value::Object(m) => m,
            _ => Map::new(),
        },
    }
}

/// The default inputs, outputs and steps of `kind` with VAE model `vae`:
///
/// - text-to-image: `latents` (tensor, as the denoiser leaves them) -> unscale -> decode ->
///   denormalize -> PNG `image`;
/// - image-to-image: PNG/JPEG `image` -> normalize -> encode -> sample (seed 0) -> scale
///   (`latents`, what the denoiser would start from) -> unscale -> decode -> denormalize -> PNG
///   `reconstruction`;
/// - inpainting: as image-to-image, plus `mask` -> binarize -> masked image -> encode ->
///   sample (seed 1) -> scale -> `masked_image_latents`.
#[allow(clippy::type_complexity)]
pub fn default_graph(
    kind: Kind,
    vae: &str,
) -> (
    BTreeMap<String, PortType>,
    BTreeMap<String, PortType>,
    Vec<StepEntry>,
) {
    let ports = |v: &[(&str, PortType)]| -> BTreeMap<String, PortType> {
        v.iter().map(|(n, t)| (n.to_string(), *t)).collect()
    };
    let encode = format!("{vae}.encode");
    let decode = format!("{vae}.decode");
    let none = Value::Null;
    let decode_tail = |from: &str, out: &str| {
        vec![
            step(
                "unscale",
                "latent_unscale",
                &[("z", from)],
                &[("z", "z_vae")],
                json!({}),
            ),
            step(
                "decode",
                &decode,
                &[("z", "z_vae")],
                &[("sample", "decoded")],
                json!({}),
            ),
            step(
                "denormalize",
                "denormalize",
                &[("x", "decoded")],
                &[("y", "pixels_out")],
                json!({}),
            ),
            step(
                "write_image",
                "image_encode",
                &[("image", "pixels_out")],
                &[("bytes", out)],
                json!({}),
            ),
        ]
    };
    let encode_head = vec![
        step(
            "read_image",
            "image_decode",
            &[("bytes", "image")],
            &[("image", "pixels")],
            none.clone(),
        ),
        step(
            "normalize",
            "normalize",
            &[("x", "pixels")],
            &[("y", "x")],
            none.clone(),
        ),
        step(
            "encode",
            &encode,
            &[("x", "x")],
            &[("mean", "mean"), ("logvar", "logvar")],
            none.clone(),
        ),
        step(
            "sample",
            "latent_sample",
            &[("mean", "mean"), ("logvar", "logvar")],
            &[("z", "z")],
            json!({"seed": 0}),
        ),
        step(
            "scale",
            "latent_scale",
            &[("z", "z")],
            &[("z", "latents")],
            none.clone(),
        ),
    ];
    match kind.task() {
        Task::TextToImage => (
            ports(&[("latents", PortType::Tensor)]),
            ports(&[("image", PortType::Image)]),
            decode_tail("latents", "image"),
        ),
        Task::ImageToImage => {
            let mut steps = encode_head;
            steps.extend(decode_tail("latents", "reconstruction"));
            (
                ports(&[("image", PortType::Image)]),
                ports(&[
                    ("latents", PortType::Tensor),
                    ("reconstruction", PortType::Image),
                ]),
                steps,
            )
        }
        Task::Inpaint => {
            let mut steps = encode_head;
            steps.extend([
                step(
                    "read_mask",
                    "image_decode",
                    &[("bytes", "mask")],
                    &[("image", "mask_pixels")],
                    json!({"channels": 3}),
                ),
                step(
                    "binarize_mask",
                    "mask_prepare",
                    &[("mask", "mask_pixels")],
                    &[("mask", "mask01")],
                    none.clone(),
                ),
                step(
                    "mask_image",
                    "mask_image",
                    &[("image", "x"), ("mask", "mask01")],
                    &[("y", "masked_x")],
                    none.clone(),
                ),
                step(
                    "encode_masked",
                    &encode,
                    &[("x", "masked_x")],
                    &[("mean", "masked_mean"), ("logvar", "masked_logvar")],
                    none.clone(),
                ),
                step(
                    "sample_masked",
                    "latent_sample",
                    &[("mean", "masked_mean"), ("logvar", "masked_logvar")],
                    &[("z", "masked_z")],
                    json!({"seed": 1}),
                ),
                step(
                    "scale_masked",
                    "latent_scale",
                    &[("z", "masked_z")],
                    &[("z", "masked_image_latents")],
                    none,
                ),
            ]);
            steps.extend(decode_tail("latents", "reconstruction"));
            (
                ports(&[("image", PortType::Image), ("mask", PortType::Image)]),
                ports(&[
                    ("latents", PortType::Tensor),
                    ("masked_image_latents", PortType::Tensor),
                    ("reconstruction", PortType::Image),
                ]),
                steps,
            )
        }
    }
}
