//! Output directories that are never left half-written and never delete what their writer did
//! not write: the rules `save_pretrained` (in every model plugin) and `mlhost compile` share.
//!
//! A directory is written whole into a temporary sibling and then put in place with one rename;
//! an existing target is replaced only when the caller allows it and it holds nothing but files
//! the writer itself writes ([`unexpected_entries`]). Replacing exchanges the two directories
//! atomically (`renameat2(RENAME_EXCHANGE)` on Linux), so a process killed at any moment leaves
//! the target either old or new; where the exchange is unavailable the old directory is renamed
//! aside first and back if the second rename fails.

use std::io;
use std::path::{Path, PathBuf};

/// The entries of `dir` (file names, sorted) that `allowed(name, is_dir)` does not accept.
pub fn unexpected_entries(
    dir: &Path,
    allowed: impl Fn(&str, bool) -> bool,
) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type()?.is_dir();
        if !allowed(&name, is_dir) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `dir` is an empty directory.
pub fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// `path` made absolute with symlinks resolved, also when its last component does not exist.
pub fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or(abs.clone()),
        _ => abs,
    }
}

/// A sibling of `target` named `.{name}.{tag}-{pid}-{nanos}` for temporary use.
pub fn temp_sibling(target: &Path, tag: &str) -> io::Result<PathBuf> {
    let name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no final component", target.display()),
        )
    })?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let parent = target.parent().unwrap_or(Path::new(""));
    Ok(parent.join(format!(
        ".{}.{tag}-{}-{nanos}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Puts the complete directory `new` at `target` (a sibling on the same file system): a rename
/// when `target` does not exist or is an empty directory, else an exchange of the two followed
/// by the removal of the old one. The caller has checked that `target` may be replaced.
pub fn put_in_place(new: &Path, target: &Path) -> io::Result<()> {
    if !target.exists() || is_empty_dir(target) {
        return std::fs::rename(new, target);
    }
    match exchange(new, target) {
        Ok(()) => {
            // `new` now holds the old directory; failing to delete it loses nothing.
            let _ = std::fs::remove_dir_all(new);
            Ok(())
        }
        Err(_) => {
            let old = temp_sibling(target, "old")?;
            std::fs::rename(target, &old)?;
            if let Err(e) = std::fs::rename(new, target) {
                let _ = std::fs::rename(&old, target);
                return Err(e);
            }
            let _ = std::fs::remove_dir_all(&old);
            Ok(())
        }
    }
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no atomic directory exchange",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        unexpected_entries(dir, |_, _| false).unwrap()
    }

    #[test]
    fn put_in_place_creates_fills_an_empty_dir_and_replaces() {
        let root = tempfile_dir();
        let target = root.join("out");
        let make = |tag: &str, file: &str| {
            let d = temp_sibling(&target, tag).unwrap();
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join(file), b"x").unwrap();
            d
        };
        put_in_place(&make("a", "one"), &target).unwrap();
        assert_eq!(names(&target), ["one"]);
        put_in_place(&make("b", "two"), &target).unwrap();
        assert_eq!(names(&target), ["two"]);
        assert_eq!(names(&root), ["out"]);
        std::fs::remove_dir_all(&target).unwrap();
        std::fs::create_dir(&target).unwrap();
        put_in_place(&make("c", "three"), &target).unwrap();
        assert_eq!(names(&target), ["three"]);
        assert_eq!(names(&root), ["out"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn resolved_handles_missing_last_components() {
        let root = tempfile_dir();
        let a = resolved(&root.join("new"));
        assert_eq!(a, std::fs::canonicalize(&root).unwrap().join("new"));
        assert_eq!(
            resolved(&root.join(".")),
            std::fs::canonicalize(&root).unwrap()
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "plugin-api-dir-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        d
    }
}
