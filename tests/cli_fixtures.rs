//! Every fixture through the `mlhost` binary with dynamically loaded plugins: `run` on the
//! diffusers directory (compiled on the fly), `compile` + `run` on the compiled directory, each
//! compared with diffusers' outputs at the tolerance `1e-4 * max(1, max|ref|)`.
//!
//! Registered as a test of the mlhost package (see host/Cargo.toml) so that cargo builds the
//! binary and the plugin cdylibs first.

#[path = "../host/tests/support/mod.rs"]
mod support;

use mlhost::io::read_safetensors;
use plugin_api::Tensor;
use std::path::{Path, PathBuf};
use support::*;

const VARIANTS: &[&str] = &[
    "sd_like",
    "sd3_like",
    "odd",
    "f16_weights",
    "legacy_attn",
    "legacy_attn_conv",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn assert_close(what: &str, ours: &Tensor, reference: &Tensor) {
    assert_eq!(ours.shape(), reference.shape(), "{what}: shape");
    assert!(
        ours.data().iter().all(|v| v.is_finite()),
        "{what}: non-finite"
    );
    let max_ref = reference.data().iter().fold(0f32, |m, v| m.max(v.abs()));
    let tol = 1e-4 * max_ref.max(1.0);
    let diff = ours
        .data()
        .iter()
        .zip(reference.data())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= tol, "{what}: max|ours - ref| = {diff:e} > {tol:e}");
}

fn mlhost_run(plugins: &TempDir, model: &Path, method: &str, input: &Path, output: &Path) {
    let out = run(mlhost()
        .arg("--plugin-dir")
        .arg(plugins.path())
        .arg("run")
        .arg(model)
        .args(["--method", method, "--input"])
        .arg(input)
        .arg("--output")
        .arg(output));
    assert_eq!(
        out.code,
        0,
        "mlhost run {method} on {}: {out:?}",
        model.display()
    );
}

fn read(path: &Path, name: &str) -> Tensor {
    read_safetensors(path, name).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_fixture_matches_diffusers_through_mlhost_run() {
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let work = TempDir::new("cli-fixtures");
    for name in VARIANTS {
        let dir = fixture(name);
        let io = dir.join("io.safetensors");
        let enc = work.path().join(format!("{name}-enc.safetensors"));
        let dec = work.path().join(format!("{name}-dec.safetensors"));

        // A diffusers directory: compiled on the fly for the input's shape.
        mlhost_run(&plugins, &dir, "encode", &io, &enc);
        assert_close(
            &format!("{name} mean"),
            &read(&enc, "mean"),
            &read(&io, "mean"),
        );
        assert_close(
            &format!("{name} logvar"),
            &read(&enc, "logvar"),
            &read(&io, "logvar"),
        );
        mlhost_run(&plugins, &dir, "decode", &io, &dec);
        assert_close(
            &format!("{name} sample"),
            &read(&dec, "sample"),
            &read(&io, "sample"),
        );

        // Compile once, then run the compiled directory: identical results.
        let x = read(&io, "x").shape();
        let compiled = work.path().join(format!("{name}-compiled"));
        let out = run(mlhost()
            .arg("--plugin-dir")
            .arg(plugins.path())
            .arg("compile")
            .arg(&dir)
            .arg("-o")
            .arg(&compiled)
            .args([
                "--uses-encoder",
                "--batch-size",
                &x[0].to_string(),
                "--sample-size",
                &format!("{},{}", x[2], x[3]),
            ]));
        assert_eq!(out.code, 0, "mlhost compile {name}: {out:?}");
        let enc2 = work.path().join(format!("{name}-enc2.safetensors"));
        let dec2 = work.path().join(format!("{name}-dec2.safetensors"));
        mlhost_run(&plugins, &compiled, "encode", &io, &enc2);
        mlhost_run(&plugins, &compiled, "decode", &io, &dec2);
        for (a, b, t) in [
            (&enc, &enc2, "mean"),
            (&enc, &enc2, "logvar"),
            (&dec, &dec2, "sample"),
        ] {
            assert_eq!(
                read(a, t).data(),
                read(b, t).data(),
                "{name} {t}: compiled dir differs"
            );
        }
    }
}
