//! The `mlhost` command line: one file per command.

use crate::error::kind_of;
use crate::plugins::{plugin_search_path, PluginRegistry};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub use crate::error::UsageError;
pub use backend::BackendArgs;

mod backend;
pub mod bench;
pub mod compile;
pub mod inspect;
pub mod pipeline;
pub mod plugins;
pub mod roundtrip;
pub mod run;
pub mod serve;
pub mod source;

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(
    name = "mlhost",
    version,
    about = "Compile, run and inspect models through plugins"
)]
pub struct Cli {
    /// Directory (or library file) to load plugins from; repeatable. Default: the
    /// MLHOST_PLUGIN_DIR path list, else the directory of the mlhost executable.
    #[arg(long = "plugin-dir", value_name = "DIR", global = true)]
    pub plugin_dirs: Vec<PathBuf>,
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the loaded plugins and what they provide.
    Plugins(plugins::PluginsArgs),
    /// Compile a diffusers checkpoint directory (or every model of a manifest) and save it.
    Compile(compile::CompileArgs),
    /// Run one method (encode / decode) of a compiled or diffusers model on a file.
    Run(run::RunArgs),
    /// Show a compiled model's rbln_config.json and a summary of each compiled artifact.
    Inspect(inspect::InspectArgs),
    /// Round-trip a PNG through encode -> mode (mean) -> decode; write it and print the PSNR.
    Roundtrip(roundtrip::RoundtripArgs),
    /// Time one method: load once, run N times on seeded random inputs.
    Bench(bench::BenchArgs),
    /// Serve models over the Open Inference Protocol v2 (KServe v2 / Triton HTTP).
    Serve(serve::ServeArgs),
    /// Run one pipeline of a manifest once: `--input NAME=FILE`, `--output NAME=FILE`.
    Pipeline(pipeline::PipelineArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Serve(args) = &cli.command {
        return serve::run(&cli.plugin_dirs, args);
    }
    if let Command::Pipeline(args) = &cli.command {
        return pipeline::run(&cli.plugin_dirs, args);
    }
    if let Command::Compile(args) = &cli.command {
        if compile::is_manifest(&args.diffusers_dir) {
            return compile::run_manifest(&cli.plugin_dirs, args);
        }
    }
    let search = plugin_search_path(&cli.plugin_dirs)?;
    let registry = PluginRegistry::load(&search)?;
    match cli.command {
        Command::Plugins(args) => plugins::run(&registry, &args),
        Command::Compile(args) => compile::run(&registry, &args),
        Command::Run(args) => run::run(&registry, &args),
        Command::Inspect(args) => inspect::run(&registry, &args),
        Command::Roundtrip(args) => roundtrip::run(&registry, &args),
        Command::Bench(args) => bench::run(&registry, &args),
        Command::Serve(args) => serve::run(&cli.plugin_dirs, &args),
        Command::Pipeline(args) => pipeline::run(&cli.plugin_dirs, &args),
    }
}

/// The process exit code for an error: 2 when the user's input is at fault (invalid argument,
/// something not found), 1 otherwise. The one place where error kinds become exit codes.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if kind_of(err).is_user_error() {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_api::PluginError;

    #[test]
    fn exit_codes_follow_the_error_kind() {
        let e = anyhow::Error::from(PluginError::invalid("bad shape")).context("running encode");
        assert_eq!(exit_code(&e), 2);
        let e = anyhow::Error::from(PluginError::internal("bug"));
        assert_eq!(exit_code(&e), 1);
        let e = anyhow::Error::from(UsageError("no such dir".into()));
        assert_eq!(exit_code(&e), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), 1);
    }

    #[test]
    fn cli_parses_documented_flags() {
        let cli = Cli::try_parse_from([
            "mlhost",
            "compile",
            "in",
            "-o",
            "out",
            "--batch-size",
            "2",
            "--sample-size",
            "64,32",
            "--uses-encoder",
            "--plugin-dir",
            "a",
            "--plugin-dir",
            "b",
        ])
        .unwrap();
        assert_eq!(cli.plugin_dirs.len(), 2);
        let Command::Compile(args) = cli.command else {
            panic!("expected compile")
        };
        assert_eq!(args.batch_size, Some(2));
        assert!(args.uses_encoder);
        assert!(Cli::try_parse_from(["mlhost", "run", "m", "--method", "blur"]).is_err());
    }
}
