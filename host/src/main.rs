//! The `mlhost` binary: parses the command line, sets up logging, runs the command and turns
//! errors into `error: ...` on stderr and a non-zero exit code.

use clap::Parser;
use mlhost::cli::{exit_code, run, Cli};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// glibc's allocator gives threads their own arenas (up to 8 per core) and keeps what each
/// frees; a server whose requests run on changing threads (tokio's blocking pool, the batchers'
/// workers) sees its RSS creep up while its heap stays flat (RELIABILITY.md, the soak). Two
/// arenas keep it flat. A `MALLOC_ARENA_MAX` in the environment, which glibc reads itself,
/// wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it runs before any other thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
    if let Err(err) = run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(exit_code(&err));
    }
}
