//! Peer benchmark: candle's Stable Diffusion VAE (candle-transformers'
//! `stable_diffusion::vae::AutoEncoderKL`) on the CPU, on a diffusers AutoencoderKL directory.
//!
//! Usage (normally through `bench/peers/candle_vae.sh`):
//!
//!     candle-vae-peer DIR [--runs N] [--threads T] [--out OUT] [--no-check]
//!
//! DIR holds config.json, diffusion_pytorch_model.safetensors (diffusers key names; candle reads
//! the current `to_q/to_k/to_v/to_out.0` attention names as well as the legacy
//! `query/key/value/proj_attn` ones, so no remapping is needed), encode_in.safetensors (`x`) and
//! decode_in.safetensors (`z`).
//!
//! Timed (wall clock, one warm-up then the median of N):
//!   encode_s: `vae.encode(&x)` = encoder + quant_conv + the latent distribution (mean, std)
//!   decode_s: `vae.decode(&z)` = post_quant_conv + decoder
//! Threads: RAYON_NUM_THREADS and CANDLE_NUM_THREADS are set to T before candle runs anything
//! (candle's CPU matmuls go through the gemm crate with `Parallelism::Rayon(RAYON_NUM_THREADS)`,
//! its other parallel loops through rayon pools sized the same way), and the global rayon pool
//! is built with T threads.
//!
//! Outputs (untimed, unless --no-check): OUT (default DIR/candle_out) gets enc.safetensors
//! (`mean`, `logvar` clamped to [-30, 20] as diffusers does) and dec.safetensors (`sample`), the
//! layout bench/peers/check_outputs.py reads. candle keeps the distribution's mean and std private
//! and can only sample from it, so mean and logvar are read through two extra models that share
//! every weight of the timed one except the 1x1 quant_conv: in the first the logvar half of
//! quant_conv is replaced by weight 0 / bias -200 (std = e^-100, so a sample is the mean to the
//! last bit); in the second the mean half gets the logvar half's weights as well. decode's sample
//! is the output itself.
//!
//! Prints one JSON line on stdout:
//! {"peer": "candle", "encode_s": ..., "decode_s": ..., "runs": N, "threads": T, "candle": "..."}

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};

const LOCK: &str = include_str!("../Cargo.lock");

struct Args {
    dir: PathBuf,
    runs: usize,
    threads: usize,
    out: Option<PathBuf>,
    check: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args { dir: PathBuf::new(), runs: 5, threads: 2, out: None, check: true };
    let mut dir = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--runs" => args.runs = value("--runs")?.parse()?,
            "--threads" => args.threads = value("--threads")?.parse()?,
            "--out" => args.out = Some(value("--out")?.into()),
            "--no-check" => args.check = false,
            "-h" | "--help" => {
                println!("usage: candle-vae-peer DIR [--runs N] [--threads T] [--out OUT] [--no-check]");
                std::process::exit(0);
            }
            s if s.starts_with('-') => bail!("unknown option {s}"),
            s if dir.is_none() => dir = Some(PathBuf::from(s)),
            s => bail!("unexpected argument {s}"),
        }
    }
    args.dir = dir.context("usage: candle-vae-peer DIR [--runs N] [--threads T]")?;
    if args.runs == 0 || args.threads == 0 {
        bail!("--runs and --threads must be positive");
    }
    Ok(args)
}

/// The candle-core version this binary was built with, read from the committed Cargo.lock.
fn candle_version() -> String {
    let mut lines = LOCK.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "name = \"candle-core\"" {
            if let Some(v) = lines.next().and_then(|v| v.trim().strip_prefix("version = ")) {
                return v.trim_matches('"').to_string();
            }
        }
    }
    "unknown".to_string()
}

fn config(dir: &Path) -> Result<(usize, usize, AutoEncoderKLConfig)> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))?;
    let c: serde_json::Value = serde_json::from_str(&text)?;
    let int = |k: &str, d: usize| c.get(k).and_then(|v| v.as_u64()).map_or(d, |v| v as usize);
    let flag = |k: &str| c.get(k).and_then(|v| v.as_bool()).unwrap_or(true);
    for (k, want) in [("act_fn", "silu")] {
        if let Some(v) = c.get(k).and_then(|v| v.as_str()) {
            if v != want {
                bail!("{path:?}: {k} = {v}, candle's VAE supports only {want}");
            }
        }
    }
    let block_out_channels = c
        .get("block_out_channels")
        .and_then(|v| v.as_array())
        .context("config.json has no block_out_channels")?
        .iter()
        .map(|v| v.as_u64().map(|v| v as usize).context("bad block_out_channels"))
        .collect::<Result<Vec<_>>>()?;
    let cfg = AutoEncoderKLConfig {
        block_out_channels,
        layers_per_block: int("layers_per_block", 2),
        latent_channels: int("latent_channels", 4),
        norm_num_groups: int("norm_num_groups", 32),
        use_quant_conv: flag("use_quant_conv"),
        use_post_quant_conv: flag("use_post_quant_conv"),
    };
    Ok((int("in_channels", 3), int("out_channels", 3), cfg))
}

fn input(dir: &Path, file: &str, name: &str) -> Result<Tensor> {
    let path = dir.join(file);
    let mut ts = candle_core::safetensors::load(&path, &Device::Cpu)
        .with_context(|| format!("reading {path:?} (run bench/make_sd_vae.py first)"))?;
    let t = ts.remove(name).with_context(|| format!("{path:?} has no tensor `{name}`"))?;
    Ok(t.to_dtype(DType::F32)?)
}

fn median_seconds<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = times.len();
    Ok(if n % 2 == 1 { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2.0 })
}

fn build(
    weights: HashMap<String, Tensor>,
    channels: (usize, usize),
    cfg: &AutoEncoderKLConfig,
) -> Result<AutoEncoderKL> {
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    Ok(AutoEncoderKL::new(vb, channels.0, channels.1, cfg.clone())?)
}

/// Weights whose quant_conv makes `encode(x).sample()` return the mean (`logvar_first` false) or
/// the unclamped logvar (`logvar_first` true): see the module docs.
fn probe_weights(weights: &HashMap<String, Tensor>, latent: usize, logvar_first: bool) -> Result<HashMap<String, Tensor>> {
    let w = weights.get("quant_conv.weight").context("no quant_conv.weight")?;
    let b = weights.get("quant_conv.bias").context("no quant_conv.bias")?;
    let keep = if logvar_first { latent } else { 0 };
    let w_half = w.narrow(0, keep, latent)?;
    let b_half = b.narrow(0, keep, latent)?;
    let w_new = Tensor::cat(&[&w_half, &w_half.zeros_like()?], 0)?;
    let b_new = Tensor::cat(&[&b_half, &(b_half.ones_like()? * -200.0)?], 0)?;
    let mut out = weights.clone();
    out.insert("quant_conv.weight".into(), w_new);
    out.insert("quant_conv.bias".into(), b_new);
    Ok(out)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    // Before anything touches rayon or candle's pools (single-threaded here).
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", args.threads.to_string());
    rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global()?;

    let (in_ch, out_ch, cfg) = config(&args.dir)?;
    let weights_path = args.dir.join("diffusion_pytorch_model.safetensors");
    let weights = candle_core::safetensors::load(&weights_path, &Device::Cpu)
        .with_context(|| format!("reading {weights_path:?}"))?;
    let x = input(&args.dir, "encode_in.safetensors", "x")?;
    let z = input(&args.dir, "decode_in.safetensors", "z")?;
    let vae = build(weights.clone(), (in_ch, out_ch), &cfg)?;

    let encode_s = median_seconds(args.runs, || Ok(vae.encode(&x)?))?;
    let decode_s = median_seconds(args.runs, || Ok(vae.decode(&z)?))?;

    if args.check {
        let out = args.out.clone().unwrap_or_else(|| args.dir.join("candle_out"));
        std::fs::create_dir_all(&out)?;
        let latent = cfg.latent_channels;
        let sample = vae.decode(&z)?;
        drop(vae);
        let mean = build(probe_weights(&weights, latent, false)?, (in_ch, out_ch), &cfg)?
            .encode(&x)?
            .sample()?;
        let logvar = build(probe_weights(&weights, latent, true)?, (in_ch, out_ch), &cfg)?
            .encode(&x)?
            .sample()?
            .clamp(-30f32, 20f32)?;
        let enc = HashMap::from([("mean", mean), ("logvar", logvar)]);
        candle_core::safetensors::save(&enc, out.join("enc.safetensors"))?;
        candle_core::safetensors::save(&HashMap::from([("sample", sample)]), out.join("dec.safetensors"))?;
        eprintln!("wrote {:?} and {:?}", out.join("enc.safetensors"), out.join("dec.safetensors"));
    }

    println!(
        "{}",
        serde_json::json!({
            "peer": "candle",
            "encode_s": (encode_s * 1e6).round() / 1e6,
            "decode_s": (decode_s * 1e6).round() / 1e6,
            "runs": args.runs,
            "threads": args.threads,
            "candle": candle_version(),
        })
    );
    Ok(())
}
