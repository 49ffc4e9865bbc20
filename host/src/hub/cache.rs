//! The cache in huggingface_hub's layout, under the cache directory:
//!
//! ```text
//! models--org--name/
//!   refs/main                         the commit hash `main` pointed at when last asked
//!   blobs/<etag>                      each file's content, named by its ETag
//!   snapshots/<commit>/<path>         a relative symlink to ../../blobs/<etag>
//!   .no_exist/<commit>/<path>         an empty file: <path> does not exist at <commit>
//! ```
//!
//! Every file is written to a temporary sibling and renamed into place, so a killed download
//! never leaves a partial blob, ref or link.

use super::error::HubError;
use super::names::{is_commit_hash, RepoId};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// The cache directory (`HF_HUB_CACHE`).
    pub root: PathBuf,
}

/// What the cache says of a file at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// It is cached at this path (in `snapshots/`).
    Found(PathBuf),
    /// It is known not to exist at the revision's commit (`.no_exist/`).
    Absent,
    /// Not cached: the paths looked at.
    Miss(Vec<PathBuf>),
}

impl Cache {
    /// The repository's folder, `models--org--name`.
    pub fn repo_dir(&self, id: &RepoId) -> PathBuf {
        self.root.join(id.folder_name())
    }

    fn ref_path(&self, id: &RepoId, revision: &str) -> PathBuf {
        join(&self.repo_dir(id).join("refs"), revision)
    }

    /// The commit `revision` names: itself for a commit hash, else what `refs/<revision>` holds.
    pub fn commit(&self, id: &RepoId, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.ref_path(id, revision)).ok()?;
        let commit = text.trim();
        is_commit_hash(commit).then(|| commit.to_string())
    }

    /// `snapshots/<commit>/<path>`.
    pub fn pointer(&self, id: &RepoId, commit: &str, path: &str) -> PathBuf {
        join(&self.repo_dir(id).join("snapshots").join(commit), path)
    }

    /// `blobs/<etag>`.
    pub fn blob(&self, id: &RepoId, etag: &str) -> PathBuf {
        self.repo_dir(id).join("blobs").join(etag)
    }

    fn no_exist(&self, id: &RepoId, commit: &str, path: &str) -> PathBuf {
        join(&self.repo_dir(id).join(".no_exist").join(commit), path)
    }

    /// Looks `path` up at `revision` without any network.
    pub fn lookup(&self, id: &RepoId, revision: &str, path: &str) -> Lookup {
        let Some(commit) = self.commit(id, revision) else {
            return Lookup::Miss(vec![self.ref_path(id, revision)]);
        };
        let pointer = self.pointer(id, &commit, path);
        // `is_file` follows the symlink: a link whose blob is gone is a miss.
        if pointer.is_file() {
            return Lookup::Found(pointer);
        }
        if self.no_exist(id, &commit, path).is_file() {
            return Lookup::Absent;
        }
        let mut looked = Vec::new();
        if !is_commit_hash(revision) {
            looked.push(self.ref_path(id, revision));
        }
        looked.push(pointer);
        Lookup::Miss(looked)
    }

    /// Records that `revision` points at `commit` (`refs/<revision>`; nothing for a commit hash).
    pub fn write_ref(&self, id: &RepoId, revision: &str, commit: &str) -> Result<(), HubError> {
        if is_commit_hash(revision) || self.commit(id, revision).as_deref() == Some(commit) {
            return Ok(());
        }
        let path = self.ref_path(id, revision);
        write_atomically(&path, |f| f.write_all(commit.as_bytes()))
    }

    /// Records that `path` does not exist at `commit` (`.no_exist/<commit>/<path>`).
    pub fn mark_absent(&self, id: &RepoId, commit: &str, path: &str) -> Result<(), HubError> {
        let marker = self.no_exist(id, commit, path);
        if marker.is_file() {
            return Ok(());
        }
        write_atomically(&marker, |_| Ok(()))
    }

    /// The blob `etag`, written by `fill` into a temporary sibling and renamed into place unless
    /// it is already there.
    pub fn store_blob(
        &self,
        id: &RepoId,
        etag: &str,
        fill: impl FnOnce(&mut File) -> Result<(), HubError>,
    ) -> Result<PathBuf, HubError> {
        let blob = self.blob(id, etag);
        if blob.is_file() {
            return Ok(blob);
        }
        let dir = blob.parent().unwrap_or(&self.root);
        create_dir(dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!("{etag}."))
            .suffix(".incomplete")
            .tempfile_in(dir)
            .map_err(|e| HubError::io("cannot create a temporary file in", dir, e))?;
        fill(tmp.as_file_mut())?;
        tmp.as_file_mut()
            .sync_all()
            .map_err(|e| HubError::io("cannot write", tmp.path(), e))?;
        tmp.persist(&blob)
            .map_err(|e| HubError::io("cannot move the download to", &blob, e.error))?;
        Ok(blob)
    }

    /// Links `snapshots/<commit>/<path>` to the blob `etag` (a relative symlink; a copy where
    /// symlinks do not exist) and returns the link.
    pub fn link(
        &self,
        id: &RepoId,
        commit: &str,
        path: &str,
        etag: &str,
    ) -> Result<PathBuf, HubError> {
        let pointer = self.pointer(id, commit, path);
        let dir = pointer.parent().unwrap_or(&self.root);
        create_dir(dir)?;
        let ups = path.split('/').count() + 1;
        let target = PathBuf::from("../".repeat(ups)).join("blobs").join(etag);
        let tmp = tempfile::Builder::new()
            .prefix(".link.")
            .make_in(dir, |p| make_link(&target, &self.blob(id, etag), p))
            .map_err(|e| HubError::io("cannot link the blob into", dir, e))?;
        tmp.persist(&pointer)
            .map_err(|e| HubError::io("cannot link", &pointer, e.error))?;
        Ok(pointer)
    }
}

#[cfg(unix)]
fn make_link(target: &Path, _blob: &Path, at: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}

#[cfg(not(unix))]
fn make_link(_target: &Path, blob: &Path, at: &Path) -> std::io::Result<()> {
    std::fs::copy(blob, at).map(|_| ())
}

/// `base` joined with a `/`-separated relative path (already checked).
fn join(base: &Path, rel: &str) -> PathBuf {
    rel.split('/').fold(base.to_path_buf(), |p, c| p.join(c))
}

fn create_dir(dir: &Path) -> Result<(), HubError> {
    std::fs::create_dir_all(dir).map_err(|e| HubError::io("cannot create", dir, e))
}

/// Writes `path` through a temporary sibling renamed into place.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), HubError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp.")
        .tempfile_in(dir)
        .map_err(|e| HubError::io("cannot create a temporary file in", dir, e))?;
    fill(tmp.as_file_mut()).map_err(|e| HubError::io("cannot write", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| HubError::io("cannot write", path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn store_link_and_look_up() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache {
            root: dir.path().to_path_buf(),
        };
        let id = RepoId::parse("org/name").unwrap();
        assert!(
            matches!(cache.lookup(&id, "main", "vae/config.json"), Lookup::Miss(l) if l[0].ends_with("refs/main"))
        );
        let blob = cache
            .store_blob(&id, "abc", |f| {
                f.write_all(b"{}")
                    .map_err(|e| HubError::io("w", Path::new("x"), e))
            })
            .unwrap();
        assert_eq!(blob, dir.path().join("models--org--name/blobs/abc"));
        let link = cache.link(&id, COMMIT, "vae/config.json", "abc").unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from("../../../blobs/abc")
        );
        cache.write_ref(&id, "main", COMMIT).unwrap();
        assert_eq!(
            cache.lookup(&id, "main", "vae/config.json"),
            Lookup::Found(link.clone())
        );
        assert_eq!(
            cache.lookup(&id, COMMIT, "vae/config.json"),
            Lookup::Found(link)
        );
        cache.mark_absent(&id, COMMIT, "model_index.json").unwrap();
        assert_eq!(
            cache.lookup(&id, "main", "model_index.json"),
            Lookup::Absent
        );
        match cache.lookup(&id, "main", "config.json") {
            Lookup::Miss(looked) => {
                assert!(looked[1].ends_with(format!("snapshots/{COMMIT}/config.json")))
            }
            other => panic!("{other:?}"),
        }
        let names: Vec<String> = std::fs::read_dir(dir.path().join("models--org--name/blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["abc"], "no temporary file is left");
    }
}
