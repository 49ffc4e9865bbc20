//! `mlhost serve`: the command-line front of [`crate::serve`].

use crate::serve::{self, ServeOptions};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `mlhost serve`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true)
    .args(["manifest", "model_repository"])))]
pub struct ServeArgs {
    /// A serving manifest (YAML): plugins, devices, models.
    pub manifest: Option<PathBuf>,
    /// Serve every compiled model directory directly under DIR, under its directory name.
    #[arg(long, value_name = "DIR")]
    pub model_repository: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// HTTP port (0: a free port, printed at start-up).
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Seconds in-flight requests may take to finish after SIGTERM / SIGINT.
    #[arg(long, default_value_t = 30)]
    pub exit_timeout_secs: u64,
}

/// Runs the server.
pub fn run(plugin_dirs: &[PathBuf], args: &ServeArgs) -> anyhow::Result<()> {
    serve::run(
        plugin_dirs,
        &ServeOptions {
            manifest: args.manifest.clone(),
            model_repository: args.model_repository.clone(),
            host: args.host.clone(),
            port: args.http_port,
            exit_timeout: Duration::from_secs(args.exit_timeout_secs),
        },
    )
}
