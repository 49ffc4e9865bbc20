//! The shipped demo model (`models/default/`) through the Rust API: compile it with rbln-npu,
//! round-trip the example photo (encode -> mode -> decode) and check the PSNR against the figure
//! the training script measured in PyTorch and recorded in `models/default/eval.json` (the figure
//! MODEL_CARD.md quotes).
//!
//! The test fails if the model, its config or its weights change: eval.json records the size and
//! CRC-32 of both files, and the PSNR must reach the recorded figure minus 0.2 dB (and agree with it
//! within 0.1 dB, the tolerance between our runtime and PyTorch).

use integration_tests::*;
use plugin_api::{Export, Tensor};
use rbln_vae::RBLNAutoencoderKL;
use std::path::{Path, PathBuf};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn eval_json() -> serde_json::Value {
    let path = repo("models/default/eval.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads an 8-bit RGB PNG as pixels (interleaved) and as the model input [1, 3, H, W] in [-1, 1].
fn read_photo(path: &Path) -> (Vec<u8>, Tensor) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let pixels = img.into_raw();
    let mut planar = vec![0f32; pixels.len()];
    for (i, &v) in pixels.iter().enumerate() {
        planar[(i % 3) * h * w + i / 3] = f32::from(v) / 127.5 - 1.0;
    }
    (pixels, Tensor::new(vec![1, 3, h, w], planar).unwrap())
}

/// The decoded [1, 3, H, W] image as interleaved 8-bit pixels, mapped as mlhost writes PNGs.
fn to_pixels(t: &Tensor) -> Vec<u8> {
    let shape = t.shape();
    let hw = shape[2] * shape[3];
    (0..3 * hw)
        .map(|i| {
            let v = t.data()[(i % 3) * hw + i / 3];
            ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
        })
        .collect()
}

/// `10 log10(255^2 / MSE)` over all values, as tools/train_demo_vae/train.py computes it.
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let se: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    10.0 * (255f64.powi(2) / (se / a.len() as f64)).log10()
}

#[test]
fn eval_json_describes_the_shipped_files() {
    let eval = eval_json();
    for name in ["config.json", "diffusion_pytorch_model.safetensors"] {
        let path = repo("models/default").join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let recorded = &eval["files"][name];
        assert_eq!(
            recorded["bytes"].as_u64(),
            Some(bytes.len() as u64),
            "{name} changed size since the training script evaluated it"
        );
        let crc = format!("{:08x}", crc32fast::hash(&bytes));
        assert_eq!(
            recorded["crc32"].as_str(),
            Some(crc.as_str()),
            "{name} changed since the training script evaluated it: re-run \
             tools/train_demo_vae/train.py --eval-only and update MODEL_CARD.md"
        );
    }
}

#[test]
fn example_photo_round_trips_at_the_recorded_psnr() {
    let eval = eval_json();
    let recorded = eval["example"]["psnr_db"]
        .as_f64()
        .expect("eval.json: example.psnr_db");
    let file = eval["example"]["file"].as_str().expect("example.file");
    let (pixels, x) = read_photo(&repo(file));
    let shape = x.shape();

    let (backend, _) = counting_backend();
    let vae = RBLNAutoencoderKL::from_pretrained(
        repo("models/default"),
        Export::Yes,
        serde_json::json!({"uses_encoder": true, "sample_size": [shape[2], shape[3]]}),
        serde_json::json!({}),
        backend,
        &no_progress(),
    )
    .expect("compile models/default");
    let dist = vae.encode(&x).expect("encode");
    assert_eq!(dist.mean.shape(), vec![1, 4, shape[2] / 4, shape[3] / 4]);
    let y = vae.decode(&dist.mode()).expect("decode");
    assert_eq!(y.shape(), shape);

    let ours = psnr(&pixels, &to_pixels(&y));
    eprintln!("{file}: PSNR {ours:.4} dB (PyTorch, recorded: {recorded} dB)");
    assert!(
        ours >= recorded - 0.2,
        "PSNR {ours:.4} dB is below the recorded {recorded} dB - 0.2"
    );
    assert!(
        (ours - recorded).abs() <= 0.1,
        "PSNR {ours:.4} dB differs from PyTorch's {recorded} dB by more than 0.1 dB"
    );
}
