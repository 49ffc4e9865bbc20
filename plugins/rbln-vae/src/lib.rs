//! `rbln-vae`: diffusers' `AutoencoderKL` (the Stable Diffusion VAE) as an RBLN-style model
//! class, `RBLNAutoencoderKL`.
//!
//! The plugin reads a diffusers checkpoint (`config.json` + `diffusion_pytorch_model.safetensors`),
//! builds one plugin-api graph per part (`encoder`, `decoder`), compiles them with whatever
//! [`plugin_api::Backend`] it is given and runs them on that backend's device. It does not depend
//! on any particular compiler or runtime.

mod blocks;
pub mod config;
pub mod graph;
pub mod model;
mod rbln_args;
pub mod rbln_config;
pub mod testing;
pub mod weights;

pub use blocks::GROUP_NORM_EPS;
pub use config::{AutoencoderKLConfig, AutoencoderKLConfigFile, SampleSize};
pub use model::AutoencoderKL;
pub use rbln_config::{RBLNAutoencoderKLConfig, RuntimeOptions};
pub use weights::{Weight, Weights};
