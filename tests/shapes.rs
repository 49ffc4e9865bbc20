//! Many shapes through one compiled directory, tiling and batch slicing, against diffusers
//! (`tests/fixtures/shapes/`, written by `tests/fixtures/generate.py shapes`): each compiled
//! shape within 1e-4 of diffusers untiled (Winograd off; 2e-3 on), tiled encode and decode
//! within 1e-4 of diffusers' `enable_tiling()` on a 56x72 input that needs edge tiles.

use integration_tests::*;
use plugin_api::{Export, Tensor};
use rbln_vae::RBLNAutoencoderKL;
use serde_json::{json, Value};
use std::collections::HashMap;

const SIZES: [(usize, usize); 3] = [(32, 32), (24, 40), (40, 16)];

fn compile(rbln_config: Value) -> RBLNAutoencoderKL {
    let (backend, _) = counting_backend();
    RBLNAutoencoderKL::from_pretrained(
        fixture_dir("shapes"),
        Export::Yes,
        rbln_config,
        json!({}),
        backend,
        &no_progress(),
    )
    .expect("compile")
}

fn load(dir: &std::path::Path) -> RBLNAutoencoderKL {
    load_compiled(dir).expect("load")
}

/// `moments[:, :c]` (the mean) and `clamp(moments[:, c:], -30, 20)` (the logvar).
fn split_moments(m: &Tensor) -> (Tensor, Tensor) {
    let s = m.shape();
    let (c, plane) = (s[1] / 2, s[2] * s[3]);
    let (mut mean, mut logvar) = (Vec::new(), Vec::new());
    for b in 0..s[0] {
        let row = &m.data()[b * s[1] * plane..(b + 1) * s[1] * plane];
        mean.extend_from_slice(&row[..c * plane]);
        logvar.extend(row[c * plane..].iter().map(|v| v.clamp(-30.0, 20.0)));
    }
    let shape = vec![s[0], c, s[2], s[3]];
    (
        Tensor::new(shape.clone(), mean).unwrap(),
        Tensor::new(shape, logvar).unwrap(),
    )
}

fn check(vae: &RBLNAutoencoderKL, io: &HashMap<String, Tensor>, tag: &str, rel: f32) {
    let dist = vae.encode(&io[&format!("x_{tag}")]).expect("encode");
    let (mean, logvar) = split_moments(&io[&format!("moments_{tag}")]);
    assert_close_rel(&format!("{tag} mean"), &dist.mean, &mean, rel);
    assert_close_rel(&format!("{tag} logvar"), &dist.logvar, &logvar, rel);
    let sample = vae.decode(&io[&format!("z_{tag}")]).expect("decode");
    assert_close_rel(
        &format!("{tag} sample"),
        &sample,
        &io[&format!("sample_{tag}")],
        rel,
    );
}

fn sizes_json() -> Value {
    json!(SIZES
        .iter()
        .map(|&(h, w)| json!([h, w]))
        .collect::<Vec<_>>())
}

/// Every shape of one directory matches diffusers at that shape, compiled and after a reload;
/// the weights are stored once (the multi-shape artifact is not much larger than a one-shape
/// one); a shape not compiled is an error listing the compiled ones.
#[test]
fn several_shapes_through_one_directory() {
    let io = fixture_io("shapes");
    for winograd in [false, true] {
        let rel = if winograd { 2e-3 } else { 1e-4 };
        let vae = compile(
            json!({"uses_encoder": true, "sample_size": sizes_json(), "winograd": winograd}),
        );
        for (h, w) in SIZES {
            check(&vae, &io, &format!("{h}x{w}"), rel);
        }
        let tmp = tempfile::tempdir().unwrap();
        let saved = tmp.path().join("multi");
        vae.save_pretrained(&saved).unwrap();
        let loaded = load(&saved);
        for (h, w) in SIZES {
            check(&loaded, &io, &format!("{h}x{w}"), rel);
        }
        let z = Tensor::zeros(vec![1, 4, 4, 4]);
        let e = loaded.decode(&z).unwrap_err();
        assert!(
            e.message().contains("[1, 4, 4, 4]")
                && e.message()
                    .contains("[1, 4, 8, 8], [1, 4, 6, 10], [1, 4, 10, 4]"),
            "{e}"
        );

        let one = compile(json!({"uses_encoder": true, "winograd": winograd}));
        let single = tmp.path().join("single");
        one.save_pretrained(&single).unwrap();
        for part in ["encoder.rbln", "decoder.rbln"] {
            let size = |d: &std::path::Path| std::fs::metadata(d.join(part)).unwrap().len();
            let (multi, single) = (size(&saved), size(&single));
            // The weights are most of a one-shape artifact of this tiny model; three copies
            // would triple it. What grows is the plan of each shape.
            assert!(
                multi * 2 < single * 3,
                "{part}: {multi} bytes for 3 shapes vs {single} for one"
            );
        }
    }
}

/// Tiled encode and decode equal diffusers' enable_tiling() (tile 32, overlap 0.25) on a
/// non-square input with edge tiles; inputs no larger than a tile run untiled, exactly.
#[test]
fn tiled_encode_and_decode_match_diffusers() {
    let io = fixture_io("shapes");
    let tiling = json!({"tile_sample_min_size": 32, "tile_overlap_factor": 0.25});
    let vae = compile(json!({"uses_encoder": true, "winograd": false, "tiling": tiling}));
    check(&vae, &io, "tiled", 1e-4);
    // 24x40 is wider than a tile (tiled); 40x16 is taller (tiled).
    for (h, w) in [(24, 40), (40, 16)] {
        let z = &io[&format!("z_{h}x{w}")];
        assert_eq!(vae.decode(z).unwrap().shape(), vec![1, 3, h, w]);
    }
    // Smaller than a tile: an exact plan made on first use.
    let small = compile(
        json!({"uses_encoder": true, "winograd": false, "tiling": {"tile_sample_min_size": 48}}),
    );
    check(&small, &io, "24x40", 1e-4);
    check(&small, &io, "32x32", 1e-4);
    let tmp = tempfile::tempdir().unwrap();
    let saved = tmp.path().join("tiled");
    vae.save_pretrained(&saved).unwrap();
    check(&load(&saved), &io, "tiled", 1e-4);
}

/// slicing: a batch larger than the compiled one runs in chunks (the last one smaller); without
/// it the error names both sizes.
#[test]
fn batch_slicing() {
    let io = fixture_io("shapes");
    let x = &io["x_32x32"];
    let (mean, _) = split_moments(&io["moments_32x32"]);
    let rows = |t: &Tensor, n: usize| {
        let mut s = t.shape();
        s[0] = n;
        Tensor::new(s, t.data().repeat(n)).unwrap()
    };
    let vae =
        compile(json!({"uses_encoder": true, "winograd": false, "batch_size": 2, "slicing": true}));
    let dist = vae.encode(&rows(x, 5)).expect("sliced encode");
    assert_close("sliced mean", &dist.mean, &rows(&mean, 5));
    let plain = compile(json!({"uses_encoder": true, "winograd": false, "batch_size": 2}));
    let e = plain.encode(&rows(x, 3)).unwrap_err();
    assert!(
        e.message().contains("3 rows") && e.message().contains("batch_size 2"),
        "{e}"
    );
}
