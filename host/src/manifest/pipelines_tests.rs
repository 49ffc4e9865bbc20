use crate::manifest::{Manifest, ManifestError};
use crate::pipeline::exec::{self, Models};
use crate::pipeline::ops::{self, Data};
use plugin_api::{NamedTensor, Tensor};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;

const SD_CONFIG: &str = r#"{"block_out_channels": [32, 64, 64], "in_channels": 3,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
    "latent_channels": 4, "scaling_factor": 0.5, "force_upcast": true}"#;

fn parse_with(config: &str, text: &str) -> (tempfile::TempDir, Result<Manifest, ManifestError>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("vae")).unwrap();
    std::fs::write(dir.path().join("vae/config.json"), config).unwrap();
    let m = Manifest::parse(text, &dir.path().join("m.yaml")).and_then(|mut m| {
        // The VAE plugin describes the models, as the host's models layer asks it to.
        let class = rbln_vae::model_class_box();
        m.resolve_pipelines(&|e| {
            let f = crate::models::describe::describe(&class, &e.model_id)
                .map_err(|e| format!("{e:#}"))?;
            Ok(crate::manifest::pipelines::ModelDescription {
                vae_scale_factor: f.vae_scale_factor,
                force_upcast: f.force_upcast,
                in_channels: f.in_channels,
                scaling: crate::pipeline::graph::ScalingFields {
                    scaling_factor: f.scaling_factor,
                    shift_factor: f.shift_factor,
                    latents_mean: f.latents_mean,
                    latents_std: f.latents_std,
                },
            })
        })?;
        Ok(m)
    });
    (dir, m)
}

fn parse(text: &str) -> Manifest {
    parse_with(SD_CONFIG, text).1.unwrap()
}

fn error(text: &str) -> ManifestError {
    let e = parse_with(SD_CONFIG, text).1.unwrap_err();
    assert!(e.to_string().contains("m.yaml:"), "{e}");
    e
}

const MODELS: &str = "models:\n  - name: vae\n    model_id: vae\n";

fn with_pipeline(p: &str) -> String {
    format!("{MODELS}pipelines:\n{p}")
}

#[test]
fn kinds_derive_the_vae_config() {
    let m = parse(&with_pipeline(
        "  - name: i2i\n    kind: StableDiffusionImg2ImgPipeline\n    height: 64\n    width: \
         96\n    batch_size: 2\n",
    ));
    assert_eq!(
        Value::Object(m.models[0].rbln_config.clone()),
        json!({"batch_size": 2, "sample_size": [64, 96], "uses_encoder": true})
    );
    // Text-to-image: decoder only; no size: the noise model's 64 x vae_scale_factor 4.
    let m = parse(&with_pipeline(
        "  - name: t2i\n    kind: StableDiffusionPipeline\n",
    ));
    assert_eq!(
        Value::Object(m.models[0].rbln_config.clone()),
        json!({"batch_size": 1, "sample_size": [256, 256]})
    );
    // ControlNet img2img compiles the encoder as img2img does.
    let m = parse(&with_pipeline(
        "  - name: cn\n    kind: StableDiffusionControlNetImg2ImgPipeline\n    image_size: 32\n",
    ));
    assert_eq!(m.models[0].rbln_config["uses_encoder"], json!(true));
    // The noise model's sample_size x vae_scale_factor.
    let m = parse(&with_pipeline(
        "  - name: t2i\n    kind: StableDiffusionXLPipeline\n    noise_model_sample_size: 8\n",
    ));
    assert_eq!(m.models[0].rbln_config["sample_size"], json!([32, 32]));
    let e = error(&with_pipeline(
        "  - name: t2i\n    kind: StableDiffusionPipeline\n    noise_model_sample_size: 8\n    \
         image_size: 64\n",
    ));
    assert!(e.message.contains("give one of them"), "{e}");
    assert_eq!(e.line, 7, "{e}");
    // SDXL with force_upcast: float32; image_size; the user's vae values win.
    let m = parse(&with_pipeline(
        "  - name: xl\n    kind: StableDiffusionXLImg2ImgPipeline\n    image_size: 32\n    \
         batch_size: 2\n    vae: {batch_size: 1}\n",
    ));
    assert_eq!(
        Value::Object(m.models[0].rbln_config.clone()),
        json!({"batch_size": 1, "sample_size": [32, 32], "uses_encoder": true,
               "dtype": "float32"})
    );
}

#[test]
fn sdxl_without_force_upcast_keeps_the_default_dtype() {
    let cfg = r#"{"block_out_channels": [8, 8], "force_upcast": false, "norm_num_groups": 8,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]}"#;
    let (_d, m) = parse_with(
        cfg,
        &with_pipeline("  - name: xl\n    kind: StableDiffusionXLPipeline\n"),
    );
    let m = m.unwrap();
    assert_eq!(
        Value::Object(m.models[0].rbln_config.clone()),
        json!({"batch_size": 1, "sample_size": [256, 256]})
    );
}

#[test]
fn forced_no_encoder_conflicts_with_an_encoding_kind() {
    let e = error(&with_pipeline(
        "  - name: i2i\n    kind: StableDiffusionImg2ImgPipeline\n    vae:\n      \
         uses_encoder: false\n",
    ));
    assert_eq!((e.line, e.column), (8, 7), "{e}");
    assert!(e.message.contains("vae.uses_encoder is false"), "{e}");
    assert!(
        e.message
            .contains("StableDiffusionImg2ImgPipeline encodes images"),
        "{e}"
    );
    // The same from the model's own rbln_config.
    let e = error(
        "models:\n  - name: vae\n    model_id: vae\n    rbln_config: {uses_encoder: false}\n\
         pipelines:\n  - name: inp\n    kind: StableDiffusion3InpaintPipeline\n",
    );
    assert!(
        e.message
            .contains("models[\"vae\"].rbln_config.uses_encoder is false"),
        "{e}"
    );
}

#[test]
fn size_conflicts_name_both_values() {
    let e = error(&with_pipeline(
        "  - name: a\n    kind: StableDiffusionPipeline\n    height: 64\n    width: 64\n    \
         vae: {sample_size: 128}\n",
    ));
    assert!(
        e.message
            .contains("vae.sample_size 128 conflicts with the pipeline's height/width [64, 64]"),
        "{e}"
    );
    assert_eq!((e.line, e.column), (9, 11), "{e}");
    let e = error(&with_pipeline(
        "  - name: a\n    kind: StableDiffusionPipeline\n    height: 64\n    width: 64\n    \
         image_size: [64, 32]\n",
    ));
    assert!(
        e.message
            .contains("image_size [64, 32] conflicts with height/width [64, 64]"),
        "{e}"
    );
    assert_eq!((e.line, e.column), (9, 5), "{e}");
    let e = error(&with_pipeline(
        "  - name: a\n    kind: StableDiffusionPipeline\n    height: 64\n",
    ));
    assert!(e.message.contains("height is given without width"), "{e}");
    // Two pipelines sharing one model must agree.
    let e = error(&with_pipeline(
        "  - name: a\n    kind: StableDiffusionPipeline\n    image_size: 64\n  - name: b\n    \
         kind: StableDiffusionImg2ImgPipeline\n    image_size: 32\n",
    ));
    assert!(
        e.message
            .contains("sample_size [32,32] here but [64,64] for pipeline \"a\""),
        "{e}"
    );
}

#[test]
fn pipelines_sharing_a_model_merge_uses_encoder() {
    let m = parse(&with_pipeline(
        "  - name: a\n    kind: StableDiffusionPipeline\n    image_size: 64\n  - name: b\n    \
         kind: StableDiffusionImg2ImgPipeline\n    image_size: 64\n",
    ));
    assert_eq!(m.models[0].rbln_config["uses_encoder"], json!(true));
    assert_eq!(m.resolved.len(), 2);
}

const CUSTOM_HEAD: &str = "  - name: custom\n    inputs: {image: image}\n    outputs: {out: \
                           image}\n    steps:\n";

fn custom(steps: &str) -> String {
    with_pipeline(&format!("{CUSTOM_HEAD}{steps}"))
}

const READ: &str = "      - name: read\n        op: image_decode\n        inputs: {bytes: \
                    image}\n        outputs: {image: pixels}\n";
const WRITE: &str = "      - name: write\n        op: image_encode\n        inputs: {image: \
                     pixels}\n        outputs: {bytes: out}\n";

#[test]
fn a_custom_graph_resolves_in_run_order() {
    let m = parse(&custom(&format!("{WRITE}{READ}")));
    let names: Vec<&str> = m.resolved[0]
        .steps
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["read", "write"]);
}

#[test]
fn undefined_tensor_points_at_the_reader() {
    let e = error(&custom(&format!(
        "{READ}      - name: write\n        op: image_encode\n        inputs: {{image: \
         pixles}}\n        outputs: {{bytes: out}}\n"
    )));
    assert!(
        e.message
            .contains("step \"write\" reads tensor \"pixles\" (port `image`)"),
        "{e}"
    );
    assert_eq!((e.line, e.column), (15, 25), "{e}");
}

#[test]
fn cycles_are_named() {
    let e = error(&custom(
        "      - name: a\n        op: normalize\n        inputs: {x: q}\n        outputs: {y: \
         p}\n      - name: b\n        op: denormalize\n        inputs: {x: p}\n        \
         outputs: {y: q}\n      - name: c\n        op: image_encode\n        inputs: {image: \
         q}\n        outputs: {bytes: out}\n      - name: d\n        op: image_decode\n        \
         inputs: {bytes: image}\n        outputs: {image: unused}\n",
    ));
    assert!(e.message.contains("steps form a cycle: a, b, c"), "{e}");
    assert_eq!(e.line, 9, "{e}");
}

#[test]
fn unknown_ops_methods_and_models() {
    let e = error(&custom(&format!(
        "{READ}      - name: blur\n        op: gaussian_blur\n        inputs: {{x: pixels}}\n"
    )));
    assert!(e.message.contains("unknown op \"gaussian_blur\""), "{e}");
    assert!(e.message.contains("latent_scale"), "lists the ops: {e}");
    assert_eq!((e.line, e.column), (14, 13), "{e}");

    let e = error(&custom(&format!(
        "{READ}      - name: enc\n        model: vae\n        method: forward\n        \
         inputs: {{x: pixels}}\n"
    )));
    assert!(
        e.message
            .contains("model \"vae\" has no method \"forward\""),
        "{e}"
    );
    assert_eq!((e.line, e.column), (15, 17), "{e}");

    let e = error(&custom(&format!(
        "{READ}      - name: dec\n        model: unet\n        method: decode\n        \
         inputs: {{z: pixels}}\n"
    )));
    assert!(
        e.message
            .contains("model \"unet\" is not declared in models (declared: vae)"),
        "{e}"
    );
    assert_eq!((e.line, e.column), (14, 16), "{e}");

    let e = error(&with_pipeline(
        "  - name: p\n    kind: StableDiffusionPipeline\n    model: vea\n",
    ));
    assert!(e.message.contains("model \"vea\" is not declared"), "{e}");
    assert_eq!((e.line, e.column), (7, 12), "{e}");
}

#[test]
fn encode_needs_the_encoder_and_ports_and_types_are_checked() {
    let e = error(&custom(&format!(
        "{READ}      - name: enc\n        model: vae\n        method: encode\n        inputs: \
         {{x: pixels}}\n        outputs: {{mean: m}}\n{WRITE}"
    )));
    assert!(e.message.contains("uses_encoder: false"), "{e}");
    let e = error(&custom(&format!(
        "{READ}      - name: n\n        op: normalize\n        inputs: {{y: pixels}}\n"
    )));
    assert!(e.message.contains("input port `x` is not connected"), "{e}");
    let e = error(&custom(
        "      - name: n\n        op: normalize\n        inputs: {x: image}\n        outputs: \
         {y: out}\n",
    ));
    assert!(
        e.message
            .contains("port `x` takes a tensor (type tensor), but \"image\" is encoded image"),
        "{e}"
    );
    let e = error(&custom(&format!(
        "{READ}      - name: n\n        op: normalize\n        inputs: {{x: pixels}}\n        \
         outputs: {{y: out}}\n"
    )));
    assert!(
        e.message
            .contains("output \"out\" is declared encoded image"),
        "{e}"
    );
}

#[test]
fn sd3_scaling_needs_a_shift_factor() {
    let e = error(&with_pipeline(
        "  - name: p\n    kind: StableDiffusion3Img2ImgPipeline\n",
    ));
    assert!(e.message.contains("has none"), "{e}");
    assert!(e.message.contains("shift_factor"), "{e}");
    assert_eq!(e.line, 6, "points at the kind: {e}");
}

/// Runs models as fixed functions of their input and records the calls.
struct FakeModels(Mutex<Vec<String>>);

impl Models for FakeModels {
    fn call(
        &self,
        model: &str,
        method: &str,
        inputs: Vec<NamedTensor>,
    ) -> Result<Vec<NamedTensor>, exec::CallError> {
        self.0.lock().unwrap().push(format!("{model}.{method}"));
        let x = &inputs[0].tensor;
        Ok(match method {
            "encode" => vec![
                NamedTensor::new("mean", x.clone()),
                NamedTensor::new("logvar", Tensor::zeros(x.shape())),
            ],
            _ => vec![NamedTensor::new("sample", x.clone())],
        })
    }
}

#[test]
fn the_executor_runs_the_inpaint_graph_and_checks_inputs() {
    let cfg = r#"{"block_out_channels": [8], "scaling_factor": 2.0, "norm_num_groups": 8}"#;
    let (_d, m) = parse_with(
        cfg,
        &with_pipeline("  - name: p\n    kind: StableDiffusionInpaintPipeline\n"),
    );
    let m = m.unwrap();
    let p = &m.resolved[0];
    let image = ops::encode_png(
        &Tensor::new(vec![1, 3, 1, 2], vec![255.0, 0.0, 255.0, 0.0, 255.0, 0.0]).unwrap(),
    )
    .unwrap();
    let mask = ops::encode_png(&Tensor::new(vec![1, 1, 1, 2], vec![0.0, 255.0]).unwrap()).unwrap();
    let models = FakeModels(Mutex::new(Vec::new()));
    let mut inputs = BTreeMap::new();
    inputs.insert("image".to_string(), Data::Bytes(image.into()));
    let e = exec::run(p, inputs.clone(), &models).unwrap_err();
    assert!(e.to_string().contains("input \"mask\" is missing"), "{e}");
    inputs.insert("mask".to_string(), Data::Bytes(mask.into()));
    let out = exec::run(p, inputs, &models).unwrap();
    // logvar 0, so sampling adds N(0, 1) noise; the fake encoder's mean is the image itself.
    let Data::Tensor(masked) = &out["masked_image_latents"] else {
        panic!("a tensor")
    };
    assert_eq!(masked.shape(), vec![1, 3, 1, 2]);
    let Data::Bytes(png) = &out["reconstruction"] else {
        panic!("bytes")
    };
    assert_eq!(ops::decode_image(png, 3).unwrap().shape(), vec![1, 3, 1, 2]);
    let mut calls = models.0.into_inner().unwrap();
    calls.sort();
    assert_eq!(calls, ["vae.decode", "vae.encode", "vae.encode"]);
}

#[test]
fn pipeline_names_models_and_kindless_pipelines() {
    let e = error(&with_pipeline(
        "  - name: vae\n    kind: StableDiffusionPipeline\n",
    ));
    assert!(e.message.contains("a model has the same name"), "{e}");
    let e = error(&with_pipeline(
        "  - name: a\n    kind: StableDiffusionPipeline\n  - name: a\n    kind: \
         StableDiffusionPipeline\n",
    ));
    assert!(e.message.contains("also used by pipelines[0]"), "{e}");
    let e = error(&with_pipeline("  - name: a\n"));
    assert!(e.message.contains("without `kind` needs `steps`"), "{e}");
    let e = error(
        &custom(&format!("{READ}{WRITE}")).replace("steps:\n", "image_size: 64\n    steps:\n"),
    );
    assert!(
        e.message.contains("derive the VAE's config from `kind`"),
        "{e}"
    );
    let e = error(
        "models:\n  - name: a\n    model_id: vae\n  - name: b\n    model_id: vae\npipelines:\n  - \
         name: p\n    kind: StableDiffusionPipeline\n",
    );
    assert!(e.message.contains("`model` is required"), "{e}");
    // Without a kind, latent scaling must say which family's convention it follows.
    let e = error(&custom(
        "      - name: s\n        op: latent_scale\n        inputs: {z: image}\n",
    ));
    assert!(e.message.contains("needs params.family"), "{e}");
}

#[test]
fn steps_may_call_a_second_declared_model() {
    let m = parse(
        "models:\n  - name: a\n    model_id: vae\n  - name: b\n    model_id: vae\npipelines:\n  \
         - name: p\n    model: a\n    inputs: {z: tensor}\n    outputs: {y: tensor}\n    \
         steps:\n      - {name: d, model: b, method: decode, inputs: {z: z}, outputs: {sample: \
         y}}\n",
    );
    assert_eq!(
        m.resolved[0].steps[0].action,
        crate::pipeline::graph::Action::Model {
            model: "b".into(),
            method: "decode".into()
        }
    );
}
