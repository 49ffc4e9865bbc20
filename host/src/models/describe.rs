//! What the host needs to know of a model directory (image channels, the VAE's scale factor,
//! the latent scaling of pipelines), asked of the model's plugin
//! (`ModelClass::describe_dir`): the host never parses a model's files itself.

use crate::error::plugin;
use anyhow::Context;
use plugin_api::ModelClassBox;
use serde::Deserialize;
use std::path::Path;

/// A model directory's facts as its plugin reports them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelFacts {
    /// Image channels.
    pub in_channels: usize,
    /// Spatial factor between image and latent.
    pub vae_scale_factor: usize,
    /// Latent scaling used by pipelines.
    pub scaling_factor: f64,
    /// Latent shift (SD3 / Flux); None when the model has none.
    pub shift_factor: Option<f64>,
    /// Per-channel latent mean (SDXL-style); None when the model has none.
    pub latents_mean: Option<Vec<f64>>,
    /// Per-channel latent std.
    pub latents_std: Option<Vec<f64>>,
    /// Whether pipelines run the model in float32.
    pub force_upcast: bool,
}

/// Asks `class` to describe `dir`.
pub fn describe(class: &ModelClassBox, dir: &Path) -> anyhow::Result<ModelFacts> {
    let path = crate::error::path_str(dir)?;
    let text = plugin(class.describe_dir(path.into()))?;
    serde_json::from_str(text.as_str()).with_context(|| {
        format!(
            "the plugin's description of {} is not understood",
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vae_plugin_describes_diffusers_and_compiled_dirs() {
        let class = rbln_vae::model_class_box();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"in_channels": 1, "out_channels": 1, "block_out_channels": [32, 64, 64],
                "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
                "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
                "shift_factor": 0.1}"#,
        )
        .unwrap();
        let facts = describe(&class, dir.path()).unwrap();
        assert_eq!(facts.in_channels, 1);
        assert_eq!(facts.vae_scale_factor, 4);
        assert_eq!(facts.scaling_factor, 0.18215);
        assert_eq!(facts.shift_factor, Some(0.1));
        assert_eq!(facts.latents_mean, None);
        assert!(facts.force_upcast);
        std::fs::write(dir.path().join("rbln_config.json"), "{not json").unwrap();
        let e = format!("{:#}", describe(&class, dir.path()).unwrap_err());
        assert!(e.contains("rbln_config.json"), "{e}");
        let e = format!(
            "{:#}",
            describe(&class, &dir.path().join("nope")).unwrap_err()
        );
        assert!(e.contains("config.json"), "{e}");
    }
}
