//! The bodies of the fuzz targets. Each takes arbitrary bytes, as a client or a file would send
//! them, and must return: an error is the expected outcome, a panic, an abort or an allocation
//! the input does not justify is a bug. `tests/fuzz/` runs them under libFuzzer (cargo-fuzz);
//! `tests/fuzz_replay.rs` replays every committed corpus entry and regression through them in
//! `cargo test`.

use std::path::Path;

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// Every target built with this crate's features, by the name of its
/// `tests/fuzz/fuzz_targets/<name>.rs` and corpus directory.
pub fn targets() -> Vec<(&'static str, Target)> {
    let all: Vec<(&'static str, Target)> = vec![
        ("oip_json", oip_json),
        ("oip_binary", oip_binary),
        ("manifest", manifest),
        ("image", image),
    ];
    #[cfg(feature = "vae")]
    let all = [
        all,
        vec![
            ("config_json", config_json as Target),
            ("rbln_config", rbln_config),
            ("safetensors", safetensors),
        ],
    ]
    .concat();
    #[cfg(feature = "npu")]
    let all = [
        all,
        vec![
            ("artifact", artifact as Target),
            ("artifact_plan", artifact_plan),
        ],
    ]
    .concat();
    all
}

/// The served method the OIP targets decode requests for: the sd_like decoder, batch 4.
fn decode_sig() -> mlhost::models::MethodSig {
    mlhost::models::MethodSig {
        method: "decode".into(),
        input: ("z".into(), vec![4, 8, 8]),
        outputs: vec![("sample".into(), vec![3, 32, 32])],
        batch: 4,
    }
}

const LIMITS: mlhost::oip::Limits = mlhost::oip::Limits {
    max_rows: 256,
    rows_reason: "max_queue_size 64 x batch 4",
};

/// An OIP request decoded as a served method and as a pipeline does: every input's FP32 values
/// and BYTES element.
fn oip(body: &[u8], header_len: Option<usize>) {
    let _ = mlhost::serve::method::parse("vae.decode", &decode_sig(), body, header_len, &LIMITS);
    if let Ok(req) = mlhost::oip::decode(body, header_len) {
        let _ = req.timeout_us();
        for input in &req.inputs {
            if let Ok(dims) = input.dims() {
                let _ = input.element_count(&dims);
                let _ = input.fp32(&dims);
            }
            let _ = input.check_rows(1, &LIMITS);
            let _ = input.single_bytes();
        }
    }
}

/// An OIP JSON request body (no binary part).
pub fn oip_json(data: &[u8]) {
    oip(data, None);
}

/// An OIP request with Triton's binary extension: the first two bytes give the JSON header's
/// length (`Inference-Header-Content-Length`, as the client sent it), the rest is the body.
pub fn oip_binary(data: &[u8]) {
    let Some((len, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    oip(body, Some(u16::from_le_bytes(*len) as usize));
}

/// A manifest YAML file (plugins, devices, models, pipelines).
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = mlhost::manifest::Manifest::parse(text, Path::new("/nonexistent/fuzz/manifest.yaml"));
}

/// A diffusers `config.json`, then what the model plugin derives from it before reading weights.
#[cfg(feature = "vae")]
pub fn config_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = rbln_vae::config::AutoencoderKLConfig::from_json_str(text) {
        let _ = rbln_vae::weights::expected_shapes(&config);
        let _ = config.to_json();
    }
}

/// A compiled directory's `rbln_config.json`, loaded with no user overrides.
#[cfg(feature = "vae")]
pub fn rbln_config(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let user = serde_json::Map::new();
    if let Ok(c) = rbln_vae::rbln_config::RBLNAutoencoderKLConfig::for_load(&value, &user) {
        let _ = c.parts();
        let _ = c.image_input_shape();
        let _ = c.latent_shape();
        let _ = c.to_json_string();
    }
}

/// A `diffusion_pytorch_model.safetensors` file (header and tensor data).
#[cfg(feature = "vae")]
pub fn safetensors(data: &[u8]) {
    let _ = rbln_vae::weights::parse_safetensors(data);
}

/// A compiled `.rbln` artifact as stored: header, checksum, plan, weights.
#[cfg(feature = "npu")]
pub fn artifact(data: &[u8]) {
    let _ = rbln_npu::runtime::executable::NpuExecutable::load(data);
}

#[cfg(feature = "npu")]
/// Weight floats are filled in for at most this many values; plans declaring more are skipped.
const MAX_FILLED_FLOATS: u64 = 1 << 20;

/// A compiled artifact's plan JSON, wrapped in a valid header and checksum with zero weights of
/// the lengths the plan declares, so that the fuzzer reaches the plan's own checks and the
/// runtime's load (arena and workspace sizes) instead of stopping at the checksum.
#[cfg(feature = "npu")]
pub fn artifact_plan(data: &[u8]) {
    let Ok(plan) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let mut floats: u64 = 0;
    if let Some(weights) = plan.get("weights").and_then(|w| w.as_array()) {
        for w in weights {
            let len = w.get("len").and_then(|l| l.as_u64()).unwrap_or(0);
            floats = floats.saturating_add(len);
        }
    }
    if floats > MAX_FILLED_FLOATS {
        return;
    }
    let mut payload = Vec::with_capacity(8 + data.len() + floats as usize * 4);
    payload.extend_from_slice(&(data.len() as u64).to_le_bytes());
    payload.extend_from_slice(data);
    payload.resize(payload.len() + floats as usize * 4, 0);
    let mut bytes = Vec::with_capacity(rbln_npu::artifact::HEADER_LEN + payload.len());
    bytes.extend_from_slice(&rbln_npu::artifact::MAGIC);
    bytes.extend_from_slice(&rbln_npu::artifact::FORMAT_VERSION_SINGLE.to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let _ = rbln_npu::runtime::executable::NpuExecutable::load(&bytes);
}

/// A PNG or JPEG image input of a pipeline (`image_decode`), as RGB and as grayscale.
pub fn image(data: &[u8]) {
    let _ = mlhost::pipeline::ops::decode_image(data, 3);
    let _ = mlhost::pipeline::ops::decode_image(data, 1);
}
