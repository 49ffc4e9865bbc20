//! Writing a compiled directory without losing data: fill a temporary sibling, then put it in
//! place with one rename ([`plugin_api::dir`]). An existing directory is replaced only when the
//! caller asks to overwrite it and it is a previous compiled directory; anything else in it (a
//! user's checkpoint, unrelated files) makes the save an error and is left alone.

use plugin_api::dir::{is_empty_dir, put_in_place, resolved, temp_sibling, unexpected_entries};
use plugin_api::PluginError;
use std::path::Path;

/// Whether an existing target may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Never: a target that exists and is not empty is an error.
    No,
    /// Only a previous compiled directory: one holding `rbln_config.json`, whose every entry
    /// is a file `rbln_config.json`, `config.json` or `*.{artifact extension}`.
    Compiled,
}

/// What a save may replace and must never touch.
pub struct Target<'a> {
    /// Whether an existing directory may be replaced.
    pub overwrite: Overwrite,
    /// The names of the files a compiled directory holds besides artifacts.
    pub files: &'a [&'a str],
    /// The artifact extension (without the dot).
    pub extension: &'a str,
    /// The directory the model was read from: never written.
    pub source: Option<&'a Path>,
}

fn invalid(msg: String) -> PluginError {
    PluginError::invalid(format!("save_pretrained: {msg}"))
}

/// Checks that `dir` may receive the save (see [`Target`]).
pub fn check_target(dir: &Path, t: &Target<'_>) -> Result<(), PluginError> {
    if let Some(src) = t.source {
        if resolved(dir) == resolved(src) {
            return Err(invalid(format!(
                "{} is the directory the model was loaded from; saving there would replace \
                 its files: save to another directory",
                dir.display()
            )));
        }
    }
    if !dir.exists() {
        return Ok(());
    }
    if !dir.is_dir() {
        return Err(invalid(format!(
            "{} exists and is not a directory",
            dir.display()
        )));
    }
    if is_empty_dir(dir) {
        return Ok(());
    }
    if t.overwrite == Overwrite::No {
        return Err(invalid(format!(
            "{} already exists and is not empty; overwrite it explicitly (mlhost compile \
             --overwrite, RBLNAutoencoderKL::save_pretrained_overwrite) to replace a previous \
             compiled directory",
            dir.display()
        )));
    }
    let suffix = format!(".{}", t.extension);
    let unexpected = unexpected_entries(dir, |name, is_dir| {
        !is_dir && (t.files.contains(&name) || name.ends_with(&suffix))
    })
    .map_err(|e| invalid(format!("cannot list {}: {e}", dir.display())))?;
    let compiled = t
        .files
        .first()
        .is_some_and(|marker| dir.join(marker).is_file());
    if !unexpected.is_empty() || !compiled {
        return Err(invalid(format!(
            "{} is not a compiled directory that may be replaced: it holds {} (only a \
             directory holding {} and *{suffix} artifacts is replaced; nothing else is deleted)",
            dir.display(),
            if unexpected.is_empty() {
                format!("no {}", t.files.first().copied().unwrap_or("config"))
            } else {
                unexpected.join(", ")
            },
            t.files.join(", ")
        )));
    }
    Ok(())
}

/// Writes `files` (name, bytes) as the only contents of `dir`, if [`check_target`] allows it.
/// Nothing is left half-written: the files go to a temporary sibling that is then put in place
/// with one rename (an existing `dir` is exchanged with it and then deleted).
pub fn write_dir_atomically(
    dir: &Path,
    files: &[(String, Vec<u8>)],
    target: &Target<'_>,
) -> Result<(), PluginError> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        invalid(format!("cannot {what} {}: {e}", p.display()))
    };
    check_target(dir, target)?;
    let tmp = temp_sibling(dir, "tmp").map_err(|e| io("save to", dir, e))?;
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
    let done =
        fill().and_then(|()| put_in_place(&tmp, dir).map_err(|e| io("rename into place", dir, e)));
    if done.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        unexpected_entries(dir, |_, _| false).unwrap()
    }

    const FILES: [&str; 2] = ["rbln_config.json", "config.json"];

    fn target(overwrite: Overwrite) -> Target<'static> {
        Target {
            overwrite,
            files: &FILES,
            extension: "rbln",
            source: None,
        }
    }

    fn compiled(tag: &str) -> Vec<(String, Vec<u8>)> {
        vec![
            ("rbln_config.json".into(), tag.as_bytes().to_vec()),
            ("decoder.rbln".into(), b"d".to_vec()),
        ]
    }

    #[test]
    fn creates_and_replaces_only_a_compiled_dir() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        write_dir_atomically(&dir, &compiled("1"), &target(Overwrite::No)).unwrap();
        assert_eq!(names(&dir), ["decoder.rbln", "rbln_config.json"]);
        // Without overwrite an existing directory is refused.
        let e = write_dir_atomically(&dir, &compiled("2"), &target(Overwrite::No)).unwrap_err();
        assert!(e.message().contains("already exists"), "{e}");
        write_dir_atomically(&dir, &compiled("2"), &target(Overwrite::Compiled)).unwrap();
        assert_eq!(std::fs::read(dir.join("rbln_config.json")).unwrap(), b"2");
        assert_eq!(names(root.path()), ["out"]);
        // A file the save did not write makes the directory not replaceable; it stays.
        std::fs::write(dir.join("stale"), b"x").unwrap();
        let e =
            write_dir_atomically(&dir, &compiled("3"), &target(Overwrite::Compiled)).unwrap_err();
        assert!(e.message().contains("stale"), "{e}");
        assert_eq!(names(&dir), ["decoder.rbln", "rbln_config.json", "stale"]);
        assert_eq!(names(root.path()), ["out"]);
        // An empty existing directory is filled.
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        write_dir_atomically(&empty, &compiled("4"), &target(Overwrite::No)).unwrap();
        assert_eq!(names(&empty), ["decoder.rbln", "rbln_config.json"]);
    }

    #[test]
    fn the_source_directory_is_never_written() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("vae");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("diffusion_pytorch_model.safetensors"), b"w").unwrap();
        let t = Target {
            source: Some(&src),
            ..target(Overwrite::Compiled)
        };
        let e =
            write_dir_atomically(&root.path().join("vae/../vae"), &compiled("1"), &t).unwrap_err();
        assert!(e.message().contains("loaded from"), "{e}");
        assert_eq!(names(&src), ["diffusion_pytorch_model.safetensors"]);
        // A diffusers directory is not a compiled one, even with overwrite.
        let e =
            write_dir_atomically(&src, &compiled("1"), &target(Overwrite::Compiled)).unwrap_err();
        assert!(
            e.message().contains("diffusion_pytorch_model.safetensors"),
            "{e}"
        );
    }

    #[test]
    fn failure_leaves_old_dir_and_no_temp() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        write_dir_atomically(&dir, &compiled("1"), &target(Overwrite::No)).unwrap();
        // A file name that cannot be created makes the fill step fail.
        let bad = vec![("no/such/sub".to_string(), vec![])];
        let e = write_dir_atomically(&dir, &bad, &target(Overwrite::Compiled)).unwrap_err();
        assert!(e.message().contains("cannot write"), "{e}");
        assert_eq!(names(&dir), ["decoder.rbln", "rbln_config.json"]);
        assert_eq!(names(root.path()), ["out"]);
        let file = root.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(write_dir_atomically(&file, &[], &target(Overwrite::Compiled)).is_err());
    }
}
