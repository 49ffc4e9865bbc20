//! The `pipelines:` section of a manifest as written (before resolution).

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::num::NonZeroUsize;

/// One entry of `pipelines:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineEntry {
    /// The pipeline's name (served as an OIP model of this name).
    pub name: String,
    /// An optimum-rbln pipeline class; decides the VAE's rbln_config and the default steps.
    pub kind: Option<Kind>,
    /// The `models` entry that is this pipeline's VAE (default: the only model).
    pub model: Option<String>,
    /// Image height in pixels (with `width`).
    pub height: Option<NonZeroUsize>,
    /// Image width in pixels (with `height`).
    pub width: Option<NonZeroUsize>,
    /// Image size: `N` or `[H, W]` (instead of `height` / `width`).
    pub image_size: Option<Value>,
    /// The noise model's (UNet / transformer) `sample_size` in latent pixels; without a size,
    /// the image size is this times the VAE's vae_scale_factor (default: SD 64, SDXL/SD3 128).
    pub noise_model_sample_size: Option<NonZeroUsize>,
    /// Images per call (the VAE's batch size; guidance doubles only the denoiser's).
    pub batch_size: Option<NonZeroUsize>,
    /// rbln_config fields of the VAE that win over what the kind derives.
    #[serde(default)]
    pub vae: Map<String, Value>,
    /// The pipeline's inputs and their types (default: the kind's).
    pub inputs: Option<BTreeMap<String, PortType>>,
    /// The pipeline's outputs and their types (default: the kind's).
    pub outputs: Option<BTreeMap<String, PortType>>,
    /// The step graph (default: the kind's).
    pub steps: Option<Vec<StepEntry>>,
}

/// A pipeline input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortType {
    /// Encoded image bytes (PNG or JPEG in; PNG out); BYTES when served.
    Image,
    /// An f32 tensor; FP32 when served, `.safetensors` from the CLI.
    Tensor,
}

/// One step: a model method or a built-in op, its inputs (port -> tensor) and outputs
/// (port -> tensor).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepEntry {
    /// The step's name (unique in the pipeline).
    pub name: String,
    /// A built-in op (see [`super::ops::OPS`]).
    pub op: Option<String>,
    /// A model of `models` (with `method`).
    pub model: Option<String>,
    /// The model method (`encode`, `decode`).
    pub method: Option<String>,
    /// Port name -> the pipeline tensor it reads.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Port name -> the pipeline tensor it writes.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// Op parameters (e.g. `{seed: 0}`).
    #[serde(default)]
    pub params: Map<String, Value>,
}

/// The optimum-rbln pipeline classes whose VAE this host compiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[allow(clippy::enum_variant_names)]
pub enum Kind {
    /// SD 1.x/2.x text-to-image: decoder only.
    StableDiffusionPipeline,
    /// SD image-to-image.
    StableDiffusionImg2ImgPipeline,
    /// SD inpainting.
    StableDiffusionInpaintPipeline,
    /// SDXL text-to-image.
    StableDiffusionXLPipeline,
    /// SDXL image-to-image.
    StableDiffusionXLImg2ImgPipeline,
    /// SDXL inpainting.
    StableDiffusionXLInpaintPipeline,
    /// SD3 text-to-image.
    StableDiffusion3Pipeline,
    /// SD3 image-to-image.
    StableDiffusion3Img2ImgPipeline,
    /// SD3 inpainting.
    StableDiffusion3InpaintPipeline,
    /// SD ControlNet text-to-image (the VAE as in text-to-image).
    StableDiffusionControlNetPipeline,
    /// SD ControlNet image-to-image.
    StableDiffusionControlNetImg2ImgPipeline,
    /// SDXL ControlNet text-to-image.
    StableDiffusionXLControlNetPipeline,
    /// SDXL ControlNet image-to-image.
    StableDiffusionXLControlNetImg2ImgPipeline,
}

/// How a family's pipelines scale latents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// `z * scaling_factor`.
    Sd,
    /// `(z - latents_mean) * scaling_factor / latents_std` when both are set, else as SD.
    Sdxl,
    /// `(z - shift_factor) * scaling_factor`.
    Sd3,
}

impl Family {
    /// Parses `sd`, `sdxl`, `sd3`.
    pub fn from_name(s: &str) -> Option<Family> {
        match s {
            "sd" => Some(Family::Sd),
            "sdxl" => Some(Family::Sdxl),
            "sd3" => Some(Family::Sd3),
            _ => None,
        }
    }

    /// The name as written in `params.family`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Sd => "sd",
            Family::Sdxl => "sdxl",
            Family::Sd3 => "sd3",
        }
    }
}

/// What a kind does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Latents in, image out.
    TextToImage,
    /// Image in, image out.
    ImageToImage,
    /// Image and mask in.
    Inpaint,
}

impl Kind {
    /// The class name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::StableDiffusionPipeline => "StableDiffusionPipeline",
            Kind::StableDiffusionImg2ImgPipeline => "StableDiffusionImg2ImgPipeline",
            Kind::StableDiffusionInpaintPipeline => "StableDiffusionInpaintPipeline",
            Kind::StableDiffusionXLPipeline => "StableDiffusionXLPipeline",
            Kind::StableDiffusionXLImg2ImgPipeline => "StableDiffusionXLImg2ImgPipeline",
            Kind::StableDiffusionXLInpaintPipeline => "StableDiffusionXLInpaintPipeline",
            Kind::StableDiffusion3Pipeline => "StableDiffusion3Pipeline",
            Kind::StableDiffusion3Img2ImgPipeline => "StableDiffusion3Img2ImgPipeline",
            Kind::StableDiffusion3InpaintPipeline => "StableDiffusion3InpaintPipeline",
            Kind::StableDiffusionControlNetPipeline => "StableDiffusionControlNetPipeline",
            Kind::StableDiffusionControlNetImg2ImgPipeline => {
                "StableDiffusionControlNetImg2ImgPipeline"
            }
            Kind::StableDiffusionXLControlNetPipeline => "StableDiffusionXLControlNetPipeline",
            Kind::StableDiffusionXLControlNetImg2ImgPipeline => {
                "StableDiffusionXLControlNetImg2ImgPipeline"
            }
        }
    }

    /// The family (latent scaling convention, float32 upcast, default size).
    pub fn family(self) -> Family {
        use Kind::*;
        match self {
            StableDiffusionPipeline
            | StableDiffusionImg2ImgPipeline
            | StableDiffusionInpaintPipeline
            | StableDiffusionControlNetPipeline
            | StableDiffusionControlNetImg2ImgPipeline => Family::Sd,
            StableDiffusionXLPipeline
            | StableDiffusionXLImg2ImgPipeline
            | StableDiffusionXLInpaintPipeline
            | StableDiffusionXLControlNetPipeline
            | StableDiffusionXLControlNetImg2ImgPipeline => Family::Sdxl,
            StableDiffusion3Pipeline
            | StableDiffusion3Img2ImgPipeline
            | StableDiffusion3InpaintPipeline => Family::Sd3,
        }
    }

    /// Text-to-image, image-to-image or inpainting.
    pub fn task(self) -> Task {
        use Kind::*;
        match self {
            StableDiffusionPipeline
            | StableDiffusionXLPipeline
            | StableDiffusion3Pipeline
            | StableDiffusionControlNetPipeline
            | StableDiffusionXLControlNetPipeline => Task::TextToImage,
            StableDiffusionImg2ImgPipeline
            | StableDiffusionXLImg2ImgPipeline
            | StableDiffusion3Img2ImgPipeline
            | StableDiffusionControlNetImg2ImgPipeline
            | StableDiffusionXLControlNetImg2ImgPipeline => Task::ImageToImage,
            StableDiffusionInpaintPipeline
            | StableDiffusionXLInpaintPipeline
            | StableDiffusion3InpaintPipeline => Task::Inpaint,
        }
    }

    /// Whether optimum-rbln compiles the VAE encoder for this kind.
    pub fn uses_encoder(self) -> bool {
        self.task() != Task::TextToImage
    }

    /// The noise model's (UNet / transformer) default `sample_size` in latent pixels: SD 64,
    /// SDXL and SD3 128. The VAE's image size defaults to this times the vae_scale_factor.
    pub fn noise_model_sample_size(self) -> usize {
        match self.family() {
            Family::Sd => 64,
            Family::Sdxl | Family::Sd3 => 128,
        }
    }
}
