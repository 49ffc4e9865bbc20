//! Test helpers for finding the plugin cdylibs and the `mlhost` binary built by cargo.
//!
//! Self-contained (std only) so that other test crates can include it with
//! `#[path = "../host/tests/support/mod.rs"] mod support;`.
//!
//! A dependency's cdylib lands in `target/<profile>/deps/lib<name>.so`, the directory that holds
//! the test executable itself; the `mlhost` binary lands one level up.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The rbln-npu plugin crate (compiler + device `rbln-npu`).
pub const RBLN_NPU: &str = "rbln_npu";
/// The rbln-vae plugin crate (model class `RBLNAutoencoderKL`).
pub const RBLN_VAE: &str = "rbln_vae";
/// The test fixture built against plugin-api 99.0.0.
pub const ABI_MISMATCH: &str = "abi_mismatch_plugin";

/// `target/<profile>/deps`, where the running test executable lives.
pub fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    exe.parent()
        .expect("the test executable lives in a directory")
        .to_path_buf()
}

/// The platform's file name of the dynamic library of crate `lib_name` (underscores).
pub fn library_file_name(lib_name: &str) -> String {
    if cfg!(target_os = "windows") {
        format!("{lib_name}.dll")
    } else if cfg!(target_os = "macos") {
        format!("lib{lib_name}.dylib")
    } else {
        format!("lib{lib_name}.so")
    }
}

/// The built cdylib of crate `lib_name`; panics with a hint if cargo has not built it.
pub fn library_path(lib_name: &str) -> PathBuf {
    let file = library_file_name(lib_name);
    let deps = deps_dir();
    for dir in [
        deps.clone(),
        deps.parent().map(Path::to_path_buf).unwrap_or_default(),
    ] {
        let candidate = dir.join(&file);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{file} not found in {} or its parent; add the crate as a dev-dependency so cargo \
         builds its cdylib",
        deps.display()
    )
}

/// A fresh temporary directory (removed on drop).
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/mlhost-test-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("mlhost-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A temporary plugin directory holding copies of the cdylibs of `lib_names`.
pub fn plugin_dir(lib_names: &[&str]) -> TempDir {
    let dir = TempDir::new("plugins");
    for name in lib_names {
        copy_library(name, dir.path());
    }
    dir
}

/// Copies the cdylib of `lib_name` into `dir`, returning the copy's path.
pub fn copy_library(lib_name: &str, dir: &Path) -> PathBuf {
    let src = library_path(lib_name);
    let dst = dir.join(library_file_name(lib_name));
    std::fs::copy(&src, &dst)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
    dst
}

/// Some dynamic library in `deps` that is not a plugin: a proc-macro `.so`/`.dylib`/`.dll`.
pub fn non_plugin_library() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(deps_dir())
        .expect("read the deps directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.contains("abi_stable_derive-")
                && (name.ends_with(".so") || name.ends_with(".dylib") || name.ends_with(".dll"))
        })
        .collect();
    found.sort();
    found
        .pop()
        .expect("abi_stable_derive's proc-macro library is in the deps directory")
}

/// The `mlhost` binary: `CARGO_BIN_EXE_mlhost` inside the mlhost package's tests, else
/// `target/<profile>/mlhost` (build it first with `cargo build -p mlhost`).
pub fn mlhost_exe() -> PathBuf {
    if let Some(exe) = option_env!("CARGO_BIN_EXE_mlhost") {
        return PathBuf::from(exe);
    }
    let name = if cfg!(windows) {
        "mlhost.exe"
    } else {
        "mlhost"
    };
    let exe = deps_dir()
        .parent()
        .map(|p| p.join(name))
        .unwrap_or_default();
    assert!(
        exe.is_file(),
        "{} not found; run `cargo build -p mlhost` first",
        exe.display()
    );
    exe
}

/// An `mlhost` command with a clean plugin environment (no `MLHOST_PLUGIN_DIR`, no `RUST_LOG`),
/// offline for the Hugging Face Hub (`HF_HUB_OFFLINE=1`: nothing downloads in tests; the Hub
/// tests point it at their loopback server).
pub fn mlhost() -> Command {
    let mut cmd = Command::new(mlhost_exe());
    cmd.env_remove("MLHOST_PLUGIN_DIR")
        .env_remove("RUST_LOG")
        .env("HF_HUB_OFFLINE", "1");
    cmd
}

/// The result of running a command.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `cmd` to completion.
pub fn run(cmd: &mut Command) -> Outcome {
    let out = cmd.output().expect("spawn the command");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
