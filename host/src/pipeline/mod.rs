//! Pipelines declared in manifests: named DAGs of steps, each a model method (`encode`,
//! `decode`) or a built-in host op ([`ops`]), with named tensors between them, in the spirit of
//! Triton ensembles. A `kind` (an optimum-rbln pipeline class) derives the VAE's rbln_config
//! ([`derive`]) and a default step graph that `steps:` may replace.
//!
//! ```yaml
//! pipelines:
//!   - name: img2img
//!     kind: StableDiffusionImg2ImgPipeline
//!     model: vae                  # the models entry that is the VAE (default: the only one)
//!     height: 64                  # or image_size: 64 | [64, 96]
//!     width: 64
//!     batch_size: 1
//!     vae: {dtype: float32}       # rbln_config values that win over the derived ones
//! ```
//!
//! Resolution happens when the manifest is parsed (`manifest::pipelines`), so every error names
//! the file, line and column. This module does not know manifests.

pub mod derive;
pub mod exec;
pub mod graph;
pub mod ops;
pub mod spec;
