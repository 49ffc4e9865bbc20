//! `mlhost bench`: load a model once, run one method on seeded random inputs several times and
//! report min / median / max seconds and peak memory, in the spirit of trtexec and
//! OpenVINO's benchmark_app.

use super::backend::BackendArgs;
use super::run::{choose_class, load_model, Method};
use crate::error::{plugin, UsageError};
use crate::plugins::PluginRegistry;
use anyhow::Context;
use clap::Args;
use plugin_api::{NamedTensor, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `mlhost bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// A compiled model directory, or a diffusers directory or Hugging Face Hub id (org/name)
    /// (compiled with its defaults, plus the encoder for `--method encode`).
    pub model_dir: PathBuf,
    /// The method to time.
    #[arg(long, value_enum)]
    pub method: Method,
    /// Timed runs.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Run on one device of the first N cores this process may use (one pinned thread per
    /// core; needs a device plugin with core sets, such as rbln-npu; default: all cores).
    #[arg(long, conflicts_with = "cores")]
    pub threads: Option<usize>,
    /// Run on one device of these cores: a list `0,2` or a range `0-3`.
    #[arg(long)]
    pub cores: Option<String>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Subfolder, Hub revision and weights variant.
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Model class, compiler and device.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Min, median and max of `samples` (which must not be empty).
pub fn summary(samples: &[f64]) -> (f64, f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (s[0], median, s[n - 1])
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Seeded inputs: images uniform in [-1, 1] for encode, standard-normal-ish latents for decode.
fn random_input(method: Method, shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let data: Vec<f32> = match method {
        Method::Encode => (0..n).map(|_| rng.gen_range(-1.0f32..=1.0)).collect(),
        // Sum of 4 uniforms, rescaled: mean 0, variance 1; enough for timing.
        Method::Decode => (0..n)
            .map(|_| (0..4).map(|_| rng.gen_range(-1.0f32..=1.0)).sum::<f32>() * 0.866)
            .collect(),
    };
    Tensor::new(shape.to_vec(), data).expect("length matches the shape")
}

/// Runs the benchmark.
pub fn run(registry: &PluginRegistry, args: &BenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        return Err(UsageError("--runs must be at least 1".into()).into());
    }
    let device = registry.select_device(args.backend.device.as_deref())?;
    let cores = configure_bench_device(registry, &device, args)?;
    let args = &BenchArgs {
        model_dir: args.source.resolve(&args.model_dir)?,
        ..args.clone()
    };
    let dir = args
        .model_dir
        .to_str()
        .ok_or_else(|| UsageError(format!("{} is not valid UTF-8", args.model_dir.display())))?;
    if !args.model_dir.is_dir() {
        return Err(UsageError(format!("model directory {dir} does not exist")).into());
    }
    let class_name = choose_class(registry, &args.backend, dir)?;
    let compiled = registry
        .model_class(&class_name)?
        .is_compiled_dir(dir.into());
    let mut kwargs = Map::new();
    args.source.add_variant(&mut kwargs);
    if args.method == Method::Encode && !compiled {
        kwargs.insert("uses_encoder".into(), Value::Bool(true));
    }
    let load_start = Instant::now();
    let model = load_model(registry, &args.backend, &class_name, dir, kwargs)?;
    let load_s = load_start.elapsed().as_secs_f64();

    let name = args.method.name();
    let spec = model
        .methods()
        .into_iter()
        .find(|m| m.name.as_str() == name)
        .ok_or_else(|| UsageError(format!("{dir} has no method `{name}`")))?;
    let input_spec = spec
        .inputs
        .first()
        .ok_or_else(|| anyhow::anyhow!("method `{name}` declares no input"))?;
    let shape = input_spec.shape();
    let input = random_input(args.method, &shape, args.seed);
    let call = || -> anyhow::Result<f64> {
        let inputs = vec![NamedTensor::new(input_spec.name.as_str(), input.clone())];
        let t = Instant::now();
        plugin(model.call(name.into(), inputs.into(), "{}".into()))
            .with_context(|| format!("running {name} of {dir}"))?;
        Ok(t.elapsed().as_secs_f64())
    };
    for _ in 0..args.warmup {
        call()?;
    }
    let times = (0..args.runs)
        .map(|_| call())
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let (min, median, max) = summary(&times);
    let rss = peak_rss_bytes();
    // The work of the compiled graph this method runs, from the compiler's summary of it.
    let gflop = if compiled {
        let report = super::inspect::report(
            registry,
            &super::inspect::InspectArgs {
                compiled_dir: args.model_dir.clone(),
                compiler: args.backend.compiler.clone(),
            },
        )
        .ok();
        report.and_then(|r| work_gflop(&r, input_spec.name.as_str()))
    } else {
        None
    };
    let gflops = gflop.map(|g| g / median);
    let threads = cores.len();
    // What the device says it runs on (rbln-npu: its cores and kernel path).
    let device_description = registry.device(&device)?.description().to_string();
    if args.json {
        let v = json!({
            "model_dir": dir, "method": name, "input_shape": shape, "threads": threads,
            "cores": cores,
            "device": device, "device_description": device_description,
            "runs": args.runs, "warmup": args.warmup, "load_s": load_s,
            "min_s": min, "median_s": median, "max_s": max, "times_s": times,
            "gflop_per_call": gflop, "effective_gflops": gflops,
            "peak_rss_bytes": rss.map_or(Value::Null, Value::from),
        });
        println!("{v}");
    } else {
        println!("{name} on {dir}: input {shape:?}, {threads} threads, load {load_s:.3} s");
        println!("  device {device}: {device_description}");
        println!(
            "  {} runs after {} warm-up: min {min:.4} s, median {median:.4} s, max {max:.4} s",
            args.runs, args.warmup
        );
        if let (Some(g), Some(r)) = (gflop, gflops) {
            println!(
                "  {g:.1} GFLOP per call (direct-convolution count): effective {r:.1} GFLOP/s at the median"
            );
        }
        if let Some(b) = rss {
            println!("  peak RSS {:.1} MiB", b as f64 / (1024.0 * 1024.0));
        }
    }
    Ok(())
}

/// The cores of device 0 of `device` (the one a model loads on by default), if it lists them.
fn device_cores(registry: &PluginRegistry, device: &str) -> anyhow::Result<Vec<u64>> {
    let listed: Value = serde_json::from_str(registry.device(device)?.devices_json().as_str())
        .unwrap_or(Value::Null);
    Ok(listed
        .as_array()
        .and_then(|a| a.first())
        .and_then(|d| d.get("cores"))
        .and_then(Value::as_array)
        .map(|c| c.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default())
}

/// Makes `device` one device (0) of the cores `--threads` / `--cores` ask for; returns the cores
/// the benchmark runs on (empty when the device does not list any).
fn configure_bench_device(
    registry: &PluginRegistry,
    device: &str,
    args: &BenchArgs,
) -> anyhow::Result<Vec<u64>> {
    let spec = match (args.threads, &args.cores) {
        (Some(0), _) => return Err(UsageError("--threads must be at least 1".into()).into()),
        (Some(n), _) => {
            let all = device_cores(registry, device)?;
            if all.len() < n {
                return Err(UsageError(format!(
                    "--threads {n}: this process may use {} core(s) ({all:?}); use at most {}",
                    all.len(),
                    all.len()
                ))
                .into());
            }
            json!(all[..n])
        }
        (None, Some(c)) => json!(c),
        (None, None) => return device_cores(registry, device),
    };
    let options = json!({"ids": [0], "cores": spec}).to_string();
    let flag = if args.threads.is_some() {
        "--threads"
    } else {
        "--cores"
    };
    plugin(registry.device(device)?.configure(options.as_str().into()))
        .map_err(|e| UsageError(format!("{flag}: device {device}: {e:#}")))?;
    device_cores(registry, device)
}

/// The `work per call: X GFLOP` of the part (in an `mlhost inspect` report) whose graph input
/// is named `input`.
fn work_gflop(report: &str, input: &str) -> Option<f64> {
    let needle = format!("input  {input}:");
    report
        .split("\n== ")
        .find(|part| part.lines().any(|l| l.starts_with(&needle)))?
        .lines()
        .find_map(|l| l.strip_prefix("work per call: "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_comes_from_the_part_with_the_input() {
        let r = "cfg\n== encoder: e.rbln ==\ninput  x: [1, 3, 8, 8] f32\nwork per call: 1.500 GFLOP (...)\n\
                 \n== decoder: d.rbln ==\ninput  z: [1, 4, 2, 2] f32\nwork per call: 2.250 GFLOP (...)\n";
        assert_eq!(work_gflop(r, "x"), Some(1.5));
        assert_eq!(work_gflop(r, "z"), Some(2.25));
        assert_eq!(work_gflop(r, "w"), None);
    }

    #[test]
    fn summary_of_odd_and_even_counts() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
        assert_eq!(summary(&[4.0, 1.0, 3.0, 2.0]), (1.0, 2.5, 4.0));
    }

    #[test]
    fn inputs_are_seeded_and_shaped() {
        let a = random_input(Method::Decode, &[1, 4, 2, 3], 5);
        assert_eq!(a.shape(), vec![1, 4, 2, 3]);
        assert_eq!(
            a.data(),
            random_input(Method::Decode, &[1, 4, 2, 3], 5).data()
        );
        assert_ne!(
            a.data(),
            random_input(Method::Decode, &[1, 4, 2, 3], 6).data()
        );
        let x = random_input(Method::Encode, &[1, 3, 4, 4], 1);
        assert!(x.data().iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}
