//! rbln-npu devices through rbln-vae's runtime options (issue 17): `device_map` puts the encoder
//! and the decoder on two 1-core devices whose threads are pinned to their cores; concurrent
//! runs give the sequential outputs; `timeout` stops an SD-size decode and the next call with a
//! long timeout succeeds; `activate_profiler` profiles only the model that asked; bad indices
//! and core sets are named errors.

use integration_tests::*;
use plugin_api::abi_stable::sabi_trait::TD_Opaque;
use plugin_api::{Backend, Compiler_TO, DeviceBox, ErrorKind, Export, PluginError};
use rbln_vae::model::AutoencoderKL;
use rbln_vae::testing::{random_weights, sd_config_json, tiny_config, write_checkpoint};
use rbln_vae::RBLNAutoencoderKL;
use serde_json::{json, Value};

/// The first two cores this process may use, if it has two.
fn two_cores() -> Option<(usize, usize)> {
    let dev = npu_device();
    let all: Value = serde_json::from_str(dev.devices_json().as_str()).unwrap();
    let cores: Vec<usize> = all[0]["cores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as usize)
        .collect();
    match cores[..] {
        [a, b, ..] => Some((a, b)),
        _ => {
            eprintln!("SKIPPED: this process may use only one core ({cores:?})");
            None
        }
    }
}

/// An rbln-npu device object configured as two 1-core devices, 0 on `a` and 1 on `b`.
fn two_devices((a, b): (usize, usize)) -> DeviceBox {
    let dev = npu_device();
    let opts = json!({"ids": [0, 1], "cores": {"0": [a], "1": [b]}}).to_string();
    let set: Value =
        serde_json::from_str(dev.configure(opts.as_str().into()).unwrap().as_str()).unwrap();
    assert_eq!(
        set,
        json!([{"id": 0, "cores": [a]}, {"id": 1, "cores": [b]}])
    );
    dev
}

fn backend_on(device: DeviceBox) -> Backend {
    Backend {
        compiler: Compiler_TO::from_value(npu_compiler(), TD_Opaque),
        device,
    }
}

fn tiny(device: DeviceBox, rbln_config: Value) -> Result<RBLNAutoencoderKL, PluginError> {
    let config = tiny_config("{}");
    let model = AutoencoderKL::new(config.clone(), random_weights(&config, 7)).unwrap();
    RBLNAutoencoderKL::from_model(model, rbln_config, backend_on(device), &no_progress())
}

use rbln_vae::testing::seeded_input as seeded;

#[test]
fn parts_run_pinned_on_their_devices_and_concurrency_changes_nothing() {
    let Some((a, b)) = two_cores() else { return };
    let vae = tiny(
        two_devices((a, b)),
        json!({"uses_encoder": true, "device_map": {"encoder": 0, "decoder": 1}}),
    )
    .unwrap();
    let x = seeded(&vae.rbln_config().image_input_shape(), 1);
    let z = seeded(&vae.rbln_config().latent_shape(), 2);
    let enc = vae.encode(&x).unwrap();
    let dec = vae.decode(&z).unwrap();

    let rt = vae.runtime_json();
    for (part, device, core) in [("encoder", 0, a), ("decoder", 1, b)] {
        let p = &rt["parts"][part];
        assert_eq!(p["devices"], json!([device]), "{rt}");
        let r = &p["replicas"][0];
        assert_eq!(r["device"], device, "{rt}");
        assert_eq!(r["cores"], json!([core]), "{rt}");
        // Read back inside the pool: every pool thread, and the thread that ran the steps.
        assert_eq!(r["thread_affinities"], json!([[core]]), "{rt}");
        assert_eq!(r["last_run_affinity"], json!([core]), "{rt}");
    }

    let (enc2, dec2) = std::thread::scope(|s| {
        let e = s.spawn(|| vae.encode(&x).unwrap());
        let d = s.spawn(|| vae.decode(&z).unwrap());
        (e.join().unwrap(), d.join().unwrap())
    });
    assert_eq!(enc2.mean.data(), enc.mean.data());
    assert_eq!(enc2.logvar.data(), enc.logvar.data());
    assert_eq!(dec2.data(), dec.data());
}

#[test]
fn a_model_on_several_devices_has_a_replica_on_each() {
    let Some(cores) = two_cores() else { return };
    let vae = tiny(two_devices(cores), json!({"device": [0, 1]})).unwrap();
    let z = seeded(&vae.rbln_config().latent_shape(), 3);
    let once = vae.decode(&z).unwrap();
    let twice = std::thread::scope(|s| {
        let h: Vec<_> = (0..2)
            .map(|_| s.spawn(|| vae.decode(&z).unwrap()))
            .collect();
        h.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    for t in twice {
        assert_eq!(t.data(), once.data());
    }
    let rt = vae.runtime_json();
    let replicas = rt["parts"]["decoder"]["replicas"].as_array().unwrap();
    let devices: Vec<&Value> = replicas.iter().map(|r| &r["device"]).collect();
    assert_eq!(devices, [&json!(0), &json!(1)], "{rt}");
}

#[test]
fn bad_device_indices_name_the_field_and_the_devices() {
    let Some((a, b)) = two_cores() else { return };
    for (cfg, field) in [
        (json!({"device_map": {"decoder": 5}}), "device_map.decoder"),
        (json!({"device": [1, 2]}), "device"),
        (json!({"device": 2, "uses_encoder": true}), "device"),
    ] {
        let e = tiny(two_devices((a, b)), cfg.clone()).err().unwrap();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{cfg}: {e}");
        let want = format!(
            "{field}: device {} does not exist; the rbln-npu devices are 0 (cores {a}), 1 (cores {b})",
            if field == "device_map.decoder" { 5 } else { 2 }
        );
        assert!(e.message().contains(&want), "{cfg}: {e}");
    }
    // Core sets the device cannot have.
    let dev = npu_device();
    for (opts, want) in [
        (
            json!({"ids": [0], "cores": "1-0"}),
            "range 1-0 ends before it starts",
        ),
        (
            json!({"ids": [0], "cores": [100000]}),
            "core 100000 is not available",
        ),
        (json!({"ids": [0, 1], "cores": {"0": [a]}}), "not for 1"),
        (json!({"threads": 2}), "unknown option 'threads'"),
    ] {
        let e = dev.configure(opts.to_string().as_str().into()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message().contains(want), "{opts}: {e}");
    }
}

#[test]
fn only_the_model_that_asks_is_profiled() {
    let profiled = tiny(npu_device(), json!({"activate_profiler": true})).unwrap();
    let plain = tiny(npu_device(), json!({})).unwrap();
    let z = seeded(&plain.rbln_config().latent_shape(), 4);
    profiled.decode(&z).unwrap();
    profiled.decode(&z).unwrap();
    plain.decode(&z).unwrap();
    let p = profiled.runtime_json();
    assert_eq!(p["activate_profiler"], true);
    let prof = &p["parts"]["decoder"]["replicas"][0]["profile"];
    assert_eq!(prof["runs"], 2, "{p}");
    let steps = prof["steps"].as_array().unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s["kernel"].as_str().unwrap().starts_with("conv2d")),
        "{p}"
    );
    let total: f64 = steps.iter().map(|s| s["total_s"].as_f64().unwrap()).sum();
    assert!(
        (total - prof["total_s"].as_f64().unwrap()).abs() < 1e-9,
        "{p}"
    );
    let q = plain.runtime_json();
    assert_eq!(q["activate_profiler"], false);
    assert!(
        q["parts"]["decoder"]["replicas"][0]
            .get("profile")
            .is_none(),
        "{q}"
    );
}

/// The SD v1 VAE architecture (random weights), at a small sample size so that the test stays
/// short: the weights, and so every step, are SD-size.
fn sd_vae_dir(tmp: &std::path::Path) -> std::path::PathBuf {
    let dir = tmp.join("sd-vae");
    let cfg = sd_config_json(64);
    let config = rbln_vae::config::AutoencoderKLConfig::from_json_str(&cfg.to_string()).unwrap();
    write_checkpoint(
        &dir,
        &cfg,
        &random_weights(&config, 3),
        safetensors::Dtype::F32,
    )
    .unwrap();
    dir
}

#[test]
fn a_timeout_stops_an_sd_size_decode_and_the_model_stays_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sd_vae_dir(tmp.path());
    // 1 ns: the limit has passed at the latest after the first step (an SD-size convolution).
    let vae = RBLNAutoencoderKL::from_pretrained(
        &dir,
        Export::Yes,
        json!({"timeout": 1e-9}),
        json!({}),
        backend_on(npu_device()),
        &no_progress(),
    )
    .unwrap();
    assert_eq!(vae.runtime_json()["timeout"], 1e-9);
    let z = seeded(&vae.rbln_config().latent_shape(), 5);
    let e = vae.decode(&z).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    for needle in [
        "timeout: model sd-vae, part decoder, timeout 0.000000001 s",
        "decode: running the decoder",
        "sd-vae decoder exceeded its timeout of 0.000000001 s (stopped before step",
    ] {
        assert!(e.message().contains(needle), "missing {needle:?} in {e}");
    }
    // The next call, with a long timeout of its own, runs to the end on the same executable.
    let ok = vae.decode_with(&z, Some(3600.0)).unwrap();
    assert_eq!(ok.shape(), vec![1, 3, 64, 64]);
    assert!(ok.data().iter().all(|v| v.is_finite()));
    // The model's own timeout still applies to calls without one.
    assert!(vae.decode(&z).unwrap_err().is_timeout());
}
