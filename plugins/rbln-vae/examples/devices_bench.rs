//! Benchmark of issue 17: encode 256 and decode 256 of the SD-size VAE (SD v1 architecture,
//! random weights made here, no Python) run at the same time, either on two 1-core devices
//! (`device_map: {encoder: 0, decoder: 1}`) or on one device of both cores that the two runs
//! share. The two layouts are interleaved round by round; prints each round and the medians.
//!
//! ```sh
//! cargo build --release -p rbln-npu && cargo build --release -p rbln-vae --example devices_bench
//! target/release/examples/devices_bench [ROUNDS] [WORK_DIR]
//! ```
//!
//! The rbln-npu plugin is loaded from `target/release/librbln_npu.so` (beside the `examples`
//! directory) as the host loads it.

use plugin_api::abi_stable::library::lib_header_from_path;
use plugin_api::{Backend, DeviceBox, Export, NoProgress, PluginRootRef, Tensor};
use rbln_vae::testing::{random_weights, sd_config_json, seeded_input as seeded, write_checkpoint};
use rbln_vae::RBLNAutoencoderKL;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::Instant;

fn root() -> PluginRootRef {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let lib = dir.join(format!(
        "{}rbln_npu{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    lib_header_from_path(&lib)
        .and_then(|h| h.init_root_module::<PluginRootRef>())
        .unwrap_or_else(|e| panic!("loading {}: {e}", lib.display()))
}

fn backend(root: PluginRootRef, devices: serde_json::Value) -> Backend {
    let device: DeviceBox = root.devices()().into_vec().remove(0);
    let set = device
        .configure(devices.to_string().as_str().into())
        .into_result()
        .expect("configure the devices");
    eprintln!("devices: {set}");
    Backend {
        compiler: root.compilers()().into_vec().remove(0),
        device,
    }
}

/// Encode and decode started together (a barrier); returns (wall, encode, decode) seconds.
fn concurrent(vae: &RBLNAutoencoderKL, x: &Tensor, z: &Tensor) -> (f64, f64, f64) {
    let go = Barrier::new(3);
    let start = std::thread::scope(|s| {
        let e = s.spawn(|| {
            go.wait();
            let t = Instant::now();
            vae.encode(x).expect("encode");
            (t, t.elapsed().as_secs_f64())
        });
        let d = s.spawn(|| {
            go.wait();
            let t = Instant::now();
            vae.decode(z).expect("decode");
            (t, t.elapsed().as_secs_f64())
        });
        go.wait();
        let (te, e) = e.join().expect("encode thread");
        let (td, d) = d.join().expect("decode thread");
        let first = te.min(td);
        let end = (te + std::time::Duration::from_secs_f64(e))
            .max(td + std::time::Duration::from_secs_f64(d));
        ((end - first).as_secs_f64(), e, d)
    });
    start
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let work = args
        .get(2)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("devices-bench"));
    let root = root();
    let src = work.join("sd-vae-random");
    let compiled = work.join("sd-vae-256");
    if !compiled.join("rbln_config.json").exists() {
        let cfg = sd_config_json(256);
        let config = rbln_vae::config::AutoencoderKLConfig::from_json_str(&cfg.to_string())
            .expect("SD config");
        write_checkpoint(
            &src,
            &cfg,
            &random_weights(&config, 0),
            safetensors::Dtype::F32,
        )
        .expect("write the checkpoint");
        let t = Instant::now();
        let vae = RBLNAutoencoderKL::from_pretrained(
            &src,
            Export::Yes,
            json!({"uses_encoder": true}),
            json!({}),
            backend(root, json!({})),
            &NoProgress::boxed(),
        )
        .expect("compile");
        vae.save_pretrained(&compiled).expect("save");
        eprintln!("compiled in {:.1} s", t.elapsed().as_secs_f64());
    }
    let load = |devices: serde_json::Value, rbln_config: serde_json::Value| {
        RBLNAutoencoderKL::from_pretrained(
            &compiled,
            Export::No,
            rbln_config,
            json!({}),
            backend(root, devices),
            &NoProgress::boxed(),
        )
        .expect("load")
    };
    let split = load(
        json!({"ids": [0, 1], "cores": {"0": [0], "1": [1]}}),
        json!({"device_map": {"encoder": 0, "decoder": 1}}),
    );
    let shared = load(json!({"ids": [0], "cores": [0, 1]}), json!({"device": 0}));
    let x = seeded(&split.rbln_config().image_input_shape(), 1);
    let z = seeded(&split.rbln_config().latent_shape(), 2);
    // Warm-up: creates the encoders' runtimes and fills the arena pools.
    concurrent(&split, &x, &z);
    concurrent(&shared, &x, &z);
    let mut results: [(Vec<f64>, Vec<f64>, Vec<f64>); 2] = Default::default();
    for r in 0..rounds {
        for (k, (name, vae)) in [
            ("two 1-core devices", &split),
            ("one shared 2-core device", &shared),
        ]
        .into_iter()
        .enumerate()
        {
            let (w, e, d) = concurrent(vae, &x, &z);
            println!("round {r}: {name}: wall {w:.2} s, encode {e:.2} s, decode {d:.2} s");
            results[k].0.push(w);
            results[k].1.push(e);
            results[k].2.push(d);
        }
    }
    for (name, (w, e, d)) in ["two 1-core devices", "one shared 2-core device"]
        .iter()
        .zip(results.iter_mut())
    {
        println!(
            "median of {rounds}: {name}: wall {:.2} s, encode {:.2} s, decode {:.2} s",
            median(w),
            median(e),
            median(d)
        );
    }
    println!("split runtime: {}", split.runtime_json());
}
