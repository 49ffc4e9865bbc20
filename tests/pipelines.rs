//! Pipelines of the manifests in `manifests/`: snapshots of every resolved model config, step
//! graph and compiled artifact; the scaling against diffusers' pipelines
//! (`fixtures/pipelines/generate_scaling.py`); a round trip through a pipeline against the same
//! chain through the rbln_vae Rust API; a compiled manifest directory that serves without
//! recompiling.

use integration_tests::*;
use mlhost::cli::compile::compile_manifest;
use mlhost::cli::inspect::{report, InspectArgs};
use mlhost::manifest::Manifest;
use mlhost::models::pipeline::load_models;
use mlhost::pipeline::exec;
use mlhost::pipeline::graph::{Action, Pipeline};
use mlhost::pipeline::ops::{Data, Op, Scaling};
use mlhost::PluginRegistry;
use plugin_api::{Export, Tensor};
use rbln_vae::RBLNAutoencoderKL;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn registry() -> PluginRegistry {
    PluginRegistry::load(&[plugin_library("rbln_npu"), plugin_library("rbln_vae")])
        .expect("loading the plugins")
}

/// Every manifest in `manifests/`, sorted.
fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    v.sort();
    assert!(v.len() >= 6, "manifests/ holds {v:?}");
    v
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_str().unwrap().to_string()
}

/// A manifest with its pipelines resolved through the plugins, as mlhost opens it.
fn load_file(file: &Path) -> Manifest {
    let mut m = Manifest::load(file).unwrap_or_else(|e| panic!("{e}"));
    mlhost::models::manifest::resolve_pipelines(&mut m, &registry())
        .unwrap_or_else(|e| panic!("{e:#}"));
    m
}

fn load(name: &str) -> Manifest {
    load_file(&root().join("manifests").join(name))
}

/// The snapshot names a manifest needs: each model's rbln_config and inspect summary, each
/// pipeline's graph, and the model_index.json.
fn snapshot_names(m: &Manifest, stem: &str) -> Vec<String> {
    let mut names = vec![format!("{stem}__model_index")];
    for model in &m.models {
        names.push(format!("{stem}__{}__rbln_config", model.name));
        names.push(format!("{stem}__{}__inspect", model.name));
    }
    for p in &m.resolved {
        names.push(format!("{stem}__{}__graph", p.name));
    }
    names
}

#[test]
fn every_manifest_has_snapshots() {
    let dir = root().join("tests").join("snapshots");
    let mut missing = Vec::new();
    for file in manifests() {
        let m = load_file(&file);
        for name in snapshot_names(&m, &stem(&file)) {
            let snap = dir.join(format!("pipelines__{name}.snap"));
            if !snap.is_file() {
                missing.push(snap.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "manifests without snapshots (run the snapshots test and `cargo insta review`): {missing:#?}"
    );
}

#[test]
fn snapshots_of_every_manifest() {
    let registry = registry();
    for file in manifests() {
        let stem = stem(&file);
        let m = load_file(&file);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("compiled");
        compile_manifest(&registry, &m, &out).unwrap_or_else(|e| panic!("{stem}: {e:#}"));
        let index = std::fs::read_to_string(out.join("model_index.json")).unwrap();
        insta::assert_snapshot!(format!("{stem}__model_index"), index);
        for model in &m.models {
            let dir = out.join(&model.name);
            let text = std::fs::read_to_string(dir.join("rbln_config.json")).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            let version = v["optimum_rbln_version"].as_str().unwrap().to_string();
            insta::assert_snapshot!(
                format!("{stem}__{}__rbln_config", model.name),
                text.replace(&version, "[version]")
            );
            let args = InspectArgs {
                compiled_dir: dir.clone(),
                compiler: None,
            };
            let summary = report(&registry, &args).unwrap();
            let summary = summary
                .replace(&dir.display().to_string(), "[compiled]")
                .replace(&version, "[version]");
            // The kernel path depends on the machine (and on RBLN_NPU_ISA).
            let summary: String = summary
                .split_inclusive('\n')
                .map(|l| match l.starts_with("kernel path on this host: ") {
                    true => "kernel path on this host: [host]\n",
                    false => l,
                })
                .collect();
            insta::assert_snapshot!(format!("{stem}__{}__inspect", model.name), summary);
        }
        for p in &m.resolved {
            insta::assert_snapshot!(
                format!("{stem}__{}__graph", p.name),
                serde_json::to_string_pretty(p).unwrap()
            );
        }
    }
}

fn scaling_of(p: &Pipeline) -> Scaling {
    p.steps
        .iter()
        .find_map(|s| match &s.action {
            Action::Op(Op::LatentScale(sc)) => Some(sc.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{} has no latent_scale step", p.name))
}

fn tensor(d: &Data) -> &Tensor {
    match d {
        Data::Tensor(t) => t,
        Data::Bytes(_) => panic!("expected a tensor"),
    }
}

fn bytes(d: &Data) -> &[u8] {
    match d {
        Data::Bytes(b) => b,
        Data::Tensor(_) => panic!("expected bytes"),
    }
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/pipelines").join(name)
}

/// The latent scaling of each family's manifest, and its decode, against diffusers' pipelines.
#[test]
fn scaling_matches_diffusers_pipelines() {
    let registry = registry();
    for (family, manifest) in [
        ("sd", "sd15-img2img.yaml"),
        ("sdxl", "sdxl-img2img.yaml"),
        ("sd3", "sd3-img2img.yaml"),
    ] {
        let reference = read_tensors(&fixture(&format!("{family}.safetensors")));
        let m = load(manifest);
        let p = &m.resolved[0];
        let scaling = scaling_of(p);
        assert_eq!(scaling.family.name(), family);
        let latents = scaling.scale(&reference["z"]).unwrap();
        assert_close(
            &format!("{family} scaled latents"),
            &latents,
            &reference["latents"],
        );
        let unscaled = scaling.unscale(&reference["latents"]).unwrap();
        assert_close(
            &format!("{family} unscaled"),
            &unscaled,
            &reference["unscaled"],
        );
        let models = load_models(&registry, &m, p).unwrap();
        let vae = &models.0["vae"];
        let out = vae
            .call(
                "decode".into(),
                vec![plugin_api::NamedTensor::new("z", unscaled)].into(),
                "{}".into(),
            )
            .into_result()
            .unwrap()
            .into_vec();
        assert_close(
            &format!("{family} decoded"),
            &out[0].tensor,
            &reference["decoded"],
        );
    }
}

/// The text-to-image manifest turns diffusers' scaled latents into diffusers' image.
#[test]
fn text_to_image_decodes_scaled_latents_like_diffusers() {
    let registry = registry();
    let reference = read_tensors(&fixture("sd.safetensors"));
    let m = load("sd15-text2img.yaml");
    let p = &m.resolved[0];
    let models = load_models(&registry, &m, p).unwrap();
    let inputs = BTreeMap::from([(
        "latents".to_string(),
        Data::Tensor(reference["latents"].clone()),
    )]);
    let out = exec::run(p, inputs, &models).unwrap();
    let png = image::load_from_memory(bytes(&out["image"]))
        .unwrap()
        .to_rgb8();
    let (w, h) = (png.width() as usize, png.height() as usize);
    let decoded = &reference["decoded"];
    let mut worst = 0.0f32;
    for (i, &v) in png.as_raw().iter().enumerate() {
        let (pixel, c) = (i / 3, i % 3);
        let want =
            ((decoded.data()[c * h * w + pixel] / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round();
        worst = worst.max((v as f32 - want).abs());
    }
    assert!(
        worst <= 1.0,
        "PNG differs from diffusers' image by {worst} levels"
    );
}

fn png_to_tensor(bytes: &[u8]) -> Tensor {
    let img = image::load_from_memory(bytes).unwrap().to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0.0f32; 3 * h * w];
    for (i, &v) in img.as_raw().iter().enumerate() {
        data[(i % 3) * h * w + i / 3] = v as f32 / 127.5 - 1.0;
    }
    Tensor::new(vec![1, 3, h, w], data).unwrap()
}

/// PNG -> encode -> sample -> scale -> unscale -> decode -> PNG through the pipeline equals the
/// same chain through rbln_vae's Rust API.
#[test]
fn img2img_round_trip_equals_the_rust_api_step_by_step() {
    let photo = std::fs::read(fixture("photo64.png")).unwrap();
    let m = load("sd15-img2img.yaml");
    let p = &m.resolved[0];
    let models = load_models(&registry(), &m, p).unwrap();
    let inputs = BTreeMap::from([("image".to_string(), Data::Bytes(Arc::new(photo.clone())))]);
    let out = exec::run(p, inputs, &models).unwrap();

    let (backend, _) = counting_backend();
    let vae = RBLNAutoencoderKL::from_pretrained(
        root().join("models/default"),
        Export::Yes,
        json!({"uses_encoder": true, "sample_size": [64, 64], "batch_size": 1}),
        json!({}),
        backend,
        &no_progress(),
    )
    .unwrap();
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/default/config.json")).unwrap(),
    )
    .unwrap();
    let sf = config["scaling_factor"].as_f64().unwrap() as f32;
    let x = png_to_tensor(&photo);
    let z = vae.encode(&x).unwrap().sample(0);
    let scaled = Tensor::new(z.shape(), z.data().iter().map(|v| v * sf).collect()).unwrap();
    assert_close("latents", tensor(&out["latents"]), &scaled);
    let back = Tensor::new(z.shape(), scaled.data().iter().map(|v| v / sf).collect()).unwrap();
    let image = vae.decode(&back).unwrap();
    let got = png_to_tensor(bytes(&out["reconstruction"]));
    let (h, w) = (64, 64);
    let mut worst = 0.0f32;
    for i in 0..3 * h * w {
        let want = ((image.data()[i] / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round();
        let have = ((got.data()[i] + 1.0) * 127.5).round();
        worst = worst.max((want - have).abs());
    }
    assert!(worst <= 1.0, "reconstruction differs by {worst} levels");
}

/// JPEG in works, and a bad image is an error naming the step.
#[test]
fn jpeg_inputs_and_bad_images() {
    let photo = image::open(fixture("photo64.png")).unwrap();
    let mut jpeg = Vec::new();
    photo
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let m = load("sd15-img2img.yaml");
    let p = &m.resolved[0];
    let models = load_models(&registry(), &m, p).unwrap();
    let inputs = BTreeMap::from([("image".to_string(), Data::Bytes(Arc::new(jpeg)))]);
    let out = exec::run(p, inputs, &models).unwrap();
    assert_eq!(tensor(&out["latents"]).shape(), vec![1, 4, 16, 16]);
    let inputs = BTreeMap::from([("image".to_string(), Data::Bytes(Arc::new(b"nope".to_vec())))]);
    let e = exec::run(p, inputs, &models).unwrap_err().to_string();
    assert!(e.contains("step \"read_image\" (image_decode)"), "{e}");
    assert!(e.contains("not a PNG or JPEG"), "{e}");
    let small = std::fs::read(fixture("photo32.png")).unwrap();
    let inputs = BTreeMap::from([("image".to_string(), Data::Bytes(Arc::new(small)))]);
    let e = exec::run(p, inputs, &models).unwrap_err();
    assert!(e.is_user_error(), "{e}");
    assert!(
        e.to_string().contains("step \"encode\" (vae.encode)"),
        "{e}"
    );
}

/// A compiled manifest directory runs the same pipeline without compiling (export: false).
#[test]
fn a_compiled_manifest_directory_reruns_without_compiling() {
    let registry = registry();
    let m = load("sd15-inpaint.yaml");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("inpaint");
    compile_manifest(&registry, &m, &out).unwrap();
    let summary = report(
        &registry,
        &InspectArgs {
            compiled_dir: out.clone(),
            compiler: None,
        },
    )
    .unwrap();
    assert!(
        summary.contains("RBLNStableDiffusionInpaintPipeline"),
        "{summary}"
    );
    assert!(summary.contains("==== model vae ===="), "{summary}");
    assert!(
        summary.contains("== encoder: ") && summary.contains("== decoder: "),
        "{summary}"
    );
    let compiled = load_file(&out.join("manifest.yaml"));
    assert_eq!(compiled.models[0].export.export(), Export::No);
    assert_eq!(compiled.models[0].rbln_config, m.models[0].rbln_config);
    let inputs = || {
        BTreeMap::from([
            (
                "image".to_string(),
                Data::Bytes(Arc::new(std::fs::read(fixture("photo64.png")).unwrap())),
            ),
            (
                "mask".to_string(),
                Data::Bytes(Arc::new(std::fs::read(fixture("mask64.png")).unwrap())),
            ),
        ])
    };
    let a = exec::run(
        &m.resolved[0],
        inputs(),
        &load_models(&registry, &m, &m.resolved[0]).unwrap(),
    )
    .unwrap();
    let cp = &compiled.resolved[0];
    let b = exec::run(
        cp,
        inputs(),
        &load_models(&registry, &compiled, cp).unwrap(),
    )
    .unwrap();
    assert_eq!(a, b);
    let e = compile_manifest(&registry, &m, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
}
