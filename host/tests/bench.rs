//! `mlhost bench`: loads once, times N runs, reports JSON with the documented keys; bad
//! arguments are input errors.

mod support;

use std::path::{Path, PathBuf};
use support::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

#[test]
fn bench_json_reports_the_timings() {
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let out = run(mlhost()
        .arg("--plugin-dir")
        .arg(plugins.path())
        .arg("bench")
        .arg(fixture("sd_like"))
        .args([
            "--method",
            "encode",
            "--runs",
            "3",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--json",
        ]));
    assert_eq!(out.code, 0, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!(v["runs"], 3);
    assert_eq!(v["threads"], 1);
    assert_eq!(v["input_shape"], serde_json::json!([1, 3, 32, 32]));
    let (min, med, max) = (
        v["min_s"].as_f64().unwrap(),
        v["median_s"].as_f64().unwrap(),
        v["max_s"].as_f64().unwrap(),
    );
    assert!(0.0 < min && min <= med && med <= max, "{v}");
    assert_eq!(v["times_s"].as_array().unwrap().len(), 3);
}

#[test]
fn bench_rejects_bad_arguments() {
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let out = run(mlhost()
        .arg("--plugin-dir")
        .arg(plugins.path())
        .arg("bench")
        .arg(fixture("sd_like"))
        .args(["--method", "decode", "--runs", "0"]));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--runs"), "{out:?}");
    let out = run(mlhost().arg("--plugin-dir").arg(plugins.path()).args([
        "bench",
        "/nonexistent/model",
        "--method",
        "decode",
    ]));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("/nonexistent/model"), "{out:?}");
}
