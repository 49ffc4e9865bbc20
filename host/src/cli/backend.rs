//! The class / compiler / device flags shared by the commands that load a model.

use crate::models::Choice;
use clap::Args;

/// Which model class, compiler and device to use.
#[derive(Debug, Clone, Default, Args)]
pub struct BackendArgs {
    /// Model class (default: the only one loaded).
    #[arg(long = "class", value_name = "NAME")]
    pub class: Option<String>,
    /// Compiler (default: the only one loaded, else rbln-npu).
    #[arg(long, value_name = "NAME")]
    pub compiler: Option<String>,
    /// Device (default: the only one loaded, else rbln-npu).
    #[arg(long, value_name = "NAME")]
    pub device: Option<String>,
}

impl BackendArgs {
    /// The model layer's choice of class, compiler and device.
    pub fn choice(&self) -> Choice {
        Choice {
            class: self.class.clone(),
            compiler: self.compiler.clone(),
            device: self.device.clone(),
        }
    }
}
