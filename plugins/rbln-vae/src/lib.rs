//! `rbln-vae`: diffusers' `AutoencoderKL` (the Stable Diffusion VAE) as an RBLN-style model
//! class, `RBLNAutoencoderKL`.
//!
//! The plugin reads a diffusers checkpoint (`config.json` + `diffusion_pytorch_model.safetensors`),
//! builds one plugin-api graph per part (`encoder`: `x -> moments`, `decoder`: `z -> sample`),
//! compiles them with whatever [`plugin_api::Backend`] it is given and runs them on that
//! backend's device. It depends on no particular compiler or runtime.
//!
//! * [`config`]: `config.json` with diffusers' defaults, checked into [`AutoencoderKLConfig`];
//! * [`weights`]: the safetensors checkpoint, checked key by key against the config;
//! * [`model`]: the in-memory [`AutoencoderKL`]; [`graph`]: its encoder / decoder graphs;
//! * [`rbln_config`]: [`RBLNAutoencoderKLConfig`] (compile-time fields + runtime options);
//! * [`vae`]: [`RBLNAutoencoderKL`] (compile / load / save / encode / decode);
//! * [`distribution`]: [`LatentDistribution`], diffusers' `DiagonalGaussianDistribution`;
//! * `ffi`: the exported plugin root module.

mod blocks;
pub mod config;
pub mod distribution;
mod ffi;
pub mod graph;
pub mod model;
mod placement;
mod rbln_args;
pub mod rbln_config;
mod save;
pub mod testing;
pub mod tiling;
pub mod vae;
pub mod weights;

pub use blocks::GROUP_NORM_EPS;
pub use config::{AutoencoderKLConfig, AutoencoderKLConfigFile, SampleSize};
pub use distribution::LatentDistribution;
pub use ffi::{get_library, model_class_box, CLASS_NAME};
pub use model::AutoencoderKL;
pub use rbln_config::{DeviceSpec, RBLNAutoencoderKLConfig, RuntimeOptions};
pub use vae::RBLNAutoencoderKL;
pub use weights::{Weight, Weights};
