//! The flags that say where a model comes from, shared by the commands that take a model
//! directory: a subfolder, and for a Hugging Face Hub id its revision; the weights variant.

use crate::models::resolve::ModelSource;
use crate::progress::BarProgress;
use clap::Args;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// `--subfolder`, `--revision`, `--variant`.
#[derive(Debug, Clone, Default, Args)]
pub struct SourceArgs {
    /// A subfolder of the model directory or Hub repository (default: vae when it holds
    /// model_index.json, a diffusers pipeline).
    #[arg(long, value_name = "DIR")]
    pub subfolder: Option<String>,
    /// For a Hugging Face Hub id (org/name, a path that does not exist): the branch, tag or
    /// commit (default: main).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Read the weights diffusion_pytorch_model.<VARIANT>.safetensors (e.g. fp16).
    #[arg(long, value_name = "VARIANT")]
    pub variant: Option<String>,
}

impl SourceArgs {
    /// The model layer's source for `model` (a directory or a Hub id).
    pub fn source(&self, model: &Path) -> ModelSource {
        ModelSource {
            id: model.display().to_string(),
            subfolder: self.subfolder.clone(),
            revision: self.revision.clone(),
            variant: self.variant.clone(),
        }
    }

    /// The local directory `model` names (a Hub id is fetched into the Hugging Face cache, with
    /// a progress bar on stderr).
    pub fn resolve(&self, model: &Path) -> anyhow::Result<PathBuf> {
        let progress = BarProgress::stderr();
        let dir = self.source(model).resolve(Path::new(""), &progress);
        progress.finish();
        dir
    }

    /// Adds `variant` to `kwargs` for `from_pretrained`.
    pub fn add_variant(&self, kwargs: &mut Map<String, Value>) {
        self.source(Path::new("")).add_variant(kwargs);
    }
}
