//! `kill -9` during `mlhost compile --overwrite` (which stages the output through the model
//! plugin's `save_pretrained` and then exchanges it with the existing directory) at 24 points
//! spread over the file-system events of a complete run: the output directory is afterwards
//! exactly the old one or exactly the new one, never partial.
//!
//! The kill points are found by a hook, not by timing: an inotify watch on the output's parent
//! (and on every directory created below it) counts the compile's file-system events, and trial
//! `i` sends SIGKILL when event `1 + i * total / 24` arrives. The test asserts that some trials
//! did kill the process in the middle of writing (their temporary directory was left behind), so
//! it cannot pass without exercising the interesting moments.
#![cfg(target_os = "linux")]

mod support;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use support::*;

const TRIALS: usize = 24;

/// File name -> contents of every file in `dir` (which holds no subdirectories).
fn snapshot(dir: &Path) -> Option<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path()).ok()?,
        );
    }
    Some(out)
}

fn compile(plugins: &Path, out: &Path, args: &[&str]) -> Child {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default");
    mlhost()
        .arg("--plugin-dir")
        .arg(plugins)
        .arg("compile")
        .arg(model)
        .arg("-o")
        .arg(out)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mlhost compile")
}

/// Watches `root` and every directory created below it.
struct Watch {
    fd: OwnedFd,
    dirs: BTreeMap<i32, PathBuf>,
}

impl Watch {
    fn new(root: &Path) -> Watch {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).unwrap();
        let mut w = Watch {
            fd,
            dirs: BTreeMap::new(),
        };
        w.add(root);
        w
    }

    fn add(&mut self, dir: &Path) {
        let flags = WatchFlags::CREATE
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DELETE;
        if let Ok(wd) = inotify::add_watch(&self.fd, dir, flags) {
            self.dirs.insert(wd, dir.to_path_buf());
        }
    }

    /// The events available now (possibly none), watching new directories as they appear.
    fn poll(&mut self) -> usize {
        let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
        let mut new_dirs = Vec::new();
        let mut n = 0;
        {
            let mut r = inotify::Reader::new(&self.fd, &mut buf);
            while let Ok(e) = r.next() {
                n += 1;
                if e.events().contains(ReadFlags::CREATE | ReadFlags::ISDIR) {
                    if let (Some(dir), Some(name)) = (self.dirs.get(&e.wd()), e.file_name()) {
                        new_dirs.push(dir.join(name.to_string_lossy().as_ref()));
                    }
                }
            }
        }
        for d in new_dirs {
            self.add(&d);
        }
        n
    }
}

/// Runs the new compile over `out`, killing it at event `kill_at` (never if `None`); returns
/// the events seen and whether the kill happened before the process exited.
fn run_trial(plugins: &Path, root: &Path, out: &Path, kill_at: Option<usize>) -> (usize, bool) {
    let mut watch = Watch::new(root);
    let mut child = compile(
        plugins,
        out,
        &["--uses-encoder", "--batch-size", "2", "--overwrite"],
    );
    let mut events = 0;
    let mut killed = false;
    loop {
        events += watch.poll();
        if !killed && kill_at.is_some_and(|k| events >= k) {
            killed = child.kill().is_ok();
        }
        if let Some(status) = child.try_wait().unwrap() {
            events += watch.poll();
            let by_signal = status.signal() == Some(9);
            assert!(by_signal || status.success(), "compile failed: {status}");
            return (events, killed && by_signal);
        }
        std::thread::yield_now();
    }
}

fn leftovers(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect()
}

#[test]
fn kill_9_during_compile_leaves_the_old_or_the_new_directory() {
    let plugins = plugin_dir(&[RBLN_NPU, RBLN_VAE]);
    let refs = TempDir::new("kill-refs");
    let (old_dir, new_dir) = (refs.path().join("old"), refs.path().join("new"));
    for (dir, args) in [
        (&old_dir, &["--uses-encoder"][..]),
        (&new_dir, &["--uses-encoder", "--batch-size", "2"][..]),
    ] {
        let status = compile(plugins.path(), dir, args).wait().unwrap();
        assert!(status.success(), "reference compile of {}", dir.display());
    }
    let (old, new) = (snapshot(&old_dir).unwrap(), snapshot(&new_dir).unwrap());
    assert_ne!(old, new);
    let work = TempDir::new("kill-work");
    let (root, out) = (work.path().to_path_buf(), work.path().join("out"));
    let reset = || {
        let _ = std::fs::remove_dir_all(&out);
        for p in leftovers(&root) {
            std::fs::remove_dir_all(&p).unwrap();
        }
        std::fs::create_dir(&out).unwrap();
        for (name, bytes) in &old {
            std::fs::write(out.join(name), bytes).unwrap();
        }
    };
    reset();
    let (total, _) = run_trial(plugins.path(), &root, &out, None);
    assert_eq!(
        snapshot(&out).as_ref(),
        Some(&new),
        "an uninterrupted run gives the new dir"
    );
    assert!(total >= 10, "only {total} file-system events in a compile");
    let (mut olds, mut news, mut mid_write) = (0, 0, 0);
    for i in 0..TRIALS {
        reset();
        let kill_at = 1 + i * total / TRIALS;
        let (_, killed) = run_trial(plugins.path(), &root, &out, Some(kill_at));
        let now = snapshot(&out);
        if now.as_ref() == Some(&old) {
            olds += 1;
        } else if now.as_ref() == Some(&new) {
            news += 1;
        } else {
            panic!(
                "trial {i} (killed at event {kill_at} of {total}): {} is neither the old nor the new directory: {:?}",
                out.display(),
                now.map(|m| m.keys().cloned().collect::<Vec<_>>())
            );
        }
        if killed && !leftovers(&root).is_empty() {
            mid_write += 1;
        }
    }
    eprintln!(
        "{TRIALS} trials over {total} events: {olds} old, {news} new, {mid_write} killed mid-write"
    );
    assert!(olds > 0 && news > 0, "old {olds}, new {news}");
    assert!(
        mid_write >= 3,
        "only {mid_write} of {TRIALS} trials killed the compile while it was writing"
    );
}
