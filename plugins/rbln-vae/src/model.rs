//! The in-memory diffusers `AutoencoderKL`: a checked config plus checked weights.

use crate::config::AutoencoderKLConfig;
use crate::weights::{read_safetensors, Weight, Weights, WEIGHTS_FILE};
use plugin_api::PluginError;
use std::collections::HashMap;
use std::path::Path;

/// diffusers' `AutoencoderKL` with its weights, ready to be turned into graphs.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoencoderKL {
    /// The checked `config.json`.
    pub config: AutoencoderKLConfig,
    weights: Weights,
}

impl AutoencoderKL {
    /// Loads `dir/config.json` and `dir/diffusion_pytorch_model.safetensors`.
    pub fn from_dir(dir: &Path) -> Result<AutoencoderKL, PluginError> {
        Self::from_dir_file(dir, WEIGHTS_FILE)
    }

    /// Loads `dir/config.json` and the weights file `weights` of `dir` (e.g. a variant's,
    /// [`crate::weights::weights_file`]).
    pub fn from_dir_file(dir: &Path, weights: &str) -> Result<AutoencoderKL, PluginError> {
        let config = AutoencoderKLConfig::from_dir(dir)?;
        let path = dir.join(weights);
        let raw = read_safetensors(&path)?;
        let weights = Weights::check(&config, raw, &path.display().to_string())?;
        Ok(AutoencoderKL { config, weights })
    }

    /// Builds a model from a config and a map of checkpoint key -> tensor (legacy attention
    /// keys are converted; the set of keys and shapes is checked against the config).
    pub fn new(
        config: AutoencoderKLConfig,
        weights: HashMap<String, Weight>,
    ) -> Result<AutoencoderKL, PluginError> {
        let weights = Weights::check(&config, weights, "weights")?;
        Ok(AutoencoderKL { config, weights })
    }

    /// The checked weights.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random_weights, tiny_config};

    #[test]
    fn new_checks_weights() {
        let c = tiny_config(r#"{}"#);
        let mut w = random_weights(&c, 0);
        assert!(AutoencoderKL::new(c.clone(), w.clone()).is_ok());
        w.remove("decoder.conv_out.bias");
        let e = AutoencoderKL::new(c, w).unwrap_err();
        assert!(e.message().contains("decoder.conv_out.bias"), "{e}");
    }

    #[test]
    fn a_variant_reads_its_own_weights_file() {
        use crate::testing::{tiny_config_json, write_checkpoint};
        use crate::weights::weights_file;
        let dir = tempfile::tempdir().unwrap();
        let c = tiny_config(r#"{}"#);
        let w = random_weights(&c, 1);
        write_checkpoint(
            dir.path(),
            &tiny_config_json("{}"),
            &w,
            safetensors::Dtype::F16,
        )
        .unwrap();
        let fp16 = weights_file(Some("fp16")).unwrap();
        assert_eq!(fp16, "diffusion_pytorch_model.fp16.safetensors");
        std::fs::rename(dir.path().join(WEIGHTS_FILE), dir.path().join(&fp16)).unwrap();
        let e = AutoencoderKL::from_dir(dir.path()).unwrap_err();
        assert!(e.message().contains(WEIGHTS_FILE), "{e}");
        let m = AutoencoderKL::from_dir_file(dir.path(), &fp16).unwrap();
        assert_eq!(m.weights().len(), w.len());
        let e = weights_file(Some("fp16/../x")).unwrap_err();
        assert!(e.message().contains("fp16/../x"), "{e}");
    }

    #[test]
    fn from_dir_missing_config_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let e = AutoencoderKL::from_dir(dir.path()).unwrap_err();
        assert_eq!(e.kind, plugin_api::ErrorKind::NotFound);
        assert!(e.message().contains("config.json"), "{e}");
    }
}
