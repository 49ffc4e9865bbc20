//! Writing a directory atomically: fill a temporary sibling, then rename it into place.

use plugin_api::PluginError;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

fn sibling(dir: &Path, tag: &str) -> Result<PathBuf, PluginError> {
    let name = dir
        .file_name()
        .ok_or_else(|| {
            PluginError::invalid(format!(
                "cannot save to {}: the path has no final directory name",
                dir.display()
            ))
        })?
        .to_string_lossy()
        .into_owned();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let parent = dir.parent().unwrap_or(Path::new(""));
    Ok(parent.join(format!(".{name}.{tag}-{}-{nanos}", std::process::id())))
}

/// Writes `files` (name, bytes) as the only contents of `dir`. Nothing is left half-written:
/// the files go to a temporary sibling that is renamed to `dir`; an existing `dir` is renamed
/// aside first and deleted only after the new one is in place (and restored on failure).
pub fn write_dir_atomically(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), PluginError> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        PluginError::invalid(format!(
            "save_pretrained: cannot {what} {}: {e}",
            p.display()
        ))
    };
    if dir.exists() && !dir.is_dir() {
        return Err(PluginError::invalid(format!(
            "save_pretrained: {} exists and is not a directory",
            dir.display()
        )));
    }
    let tmp = sibling(dir, "tmp")?;
    if let Some(parent) = tmp.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
    }
    let fill = || -> Result<(), PluginError> {
        std::fs::create_dir(&tmp).map_err(|e| io("create", &tmp, e))?;
        for (name, bytes) in files {
            let p = tmp.join(name);
            std::fs::write(&p, bytes).map_err(|e| io("write", &p, e))?;
        }
        Ok(())
    };
    if let Err(e) = fill() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        let old = sibling(dir, "old")?;
        if let Err(e) = std::fs::rename(dir, &old) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(io("move aside", dir, e));
        }
        if let Err(e) = std::fs::rename(&tmp, dir) {
            let _ = std::fs::rename(&old, dir);
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(io("rename into place", dir, e));
        }
        // The new directory is in place; a failure to delete the old copy loses nothing.
        let _ = std::fs::remove_dir_all(&old);
    } else if let Err(e) = std::fs::rename(&tmp, dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(io("rename into place", dir, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn creates_and_replaces_without_leftovers() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        write_dir_atomically(&dir, &[("a".into(), b"1".to_vec())]).unwrap();
        assert_eq!(names(&dir), ["a"]);
        std::fs::write(dir.join("stale"), b"x").unwrap();
        write_dir_atomically(&dir, &[("b".into(), b"2".to_vec())]).unwrap();
        assert_eq!(names(&dir), ["b"]);
        assert_eq!(names(root.path()), ["out"]);
    }

    #[test]
    fn failure_leaves_old_dir_and_no_temp() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        write_dir_atomically(&dir, &[("a".into(), b"1".to_vec())]).unwrap();
        // A file name that cannot be created makes the fill step fail.
        let e = write_dir_atomically(&dir, &[("no/such/sub".into(), vec![])]).unwrap_err();
        assert!(e.message().contains("cannot write"), "{e}");
        assert_eq!(names(&dir), ["a"]);
        assert_eq!(names(root.path()), ["out"]);
        let file = root.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(write_dir_atomically(&file, &[]).is_err());
    }
}
