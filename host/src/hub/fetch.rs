//! One file of a repository at a revision, as huggingface_hub's `hf_hub_download` gets it:
//!
//! 1. a commit hash whose snapshot holds the file: the cache, no network;
//! 2. offline (`HF_HUB_OFFLINE=1`): the cache only (`refs/<revision>` -> `snapshots/<commit>/`);
//! 3. else a HEAD names the commit and the blob: the cached blob if present, else a download
//!    into the cache; a file the endpoint says does not exist is recorded in `.no_exist/`;
//! 4. when no endpoint answers, or it refuses (401, 403, no such repository), the cache again;
//!    a miss is then an error naming the id, revision, file, why, and every path looked at.
//!
//! Within one [`Hub`], the first answer pins the revision to its commit, so every later file
//! of the same repository and revision comes from the same snapshot.

use super::cache::{Cache, Lookup};
use super::error::{HubError, HubErrorKind};
use super::names::{check_repo_path, check_revision, is_commit_hash, RepoId};
use super::remote::{Failure, Head, Remote};
use super::settings::Settings;
use plugin_api::Progress;
use std::collections::HashMap;
use std::path::PathBuf;

/// A session with the Hub: its settings, cache, endpoint and pinned revisions.
pub struct Hub {
    settings: Settings,
    cache: Cache,
    remote: Remote,
    /// (id, revision) -> the commit the endpoint resolved it to.
    pinned: HashMap<(String, String), String>,
    /// Set once no endpoint answered: later files come from the cache without asking again.
    unreachable: Option<String>,
}

impl Hub {
    /// A session with `settings`.
    pub fn new(settings: Settings) -> Hub {
        Hub {
            cache: Cache {
                root: settings.cache.clone(),
            },
            remote: Remote::new(&settings.endpoint, settings.token.clone()),
            settings,
            pinned: HashMap::new(),
            unreachable: None,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `path` of `id` at `revision`: its path in the cache's `snapshots/`, or `None` when the
    /// repository has no such file at that revision.
    pub fn file(
        &mut self,
        id: &RepoId,
        revision: &str,
        path: &str,
        progress: &dyn Progress,
    ) -> Result<Option<PathBuf>, HubError> {
        self.get(id, revision, path, progress)?
    }

    /// [`Hub::file`] for an optional file: a file neither the endpoint nor the cache can say
    /// anything of is `None` too (a later [`Hub::file`] reports the reason).
    pub fn probe(
        &mut self,
        id: &RepoId,
        revision: &str,
        path: &str,
        progress: &dyn Progress,
    ) -> Result<Option<PathBuf>, HubError> {
        Ok(self.get(id, revision, path, progress)?.unwrap_or(None))
    }

    fn get(
        &mut self,
        id: &RepoId,
        revision: &str,
        path: &str,
        progress: &dyn Progress,
    ) -> Result<Result<Option<PathBuf>, HubError>, HubError> {
        check_revision(revision)?;
        check_repo_path(path, "file")?;
        let key = (id.to_string(), revision.to_string());
        let rev = self.pinned.get(&key).cloned();
        let rev = rev.as_deref().unwrap_or(revision);
        if is_commit_hash(rev) {
            match self.cache.lookup(id, rev, path) {
                Lookup::Found(p) => return Ok(Ok(Some(p))),
                Lookup::Absent => return Ok(Ok(None)),
                Lookup::Miss(_) => {}
            }
        }
        if self.settings.offline {
            return Ok(self.cached(
                id,
                revision,
                rev,
                path,
                "HF_HUB_OFFLINE is set".into(),
                HubErrorKind::NotFound,
            ));
        }
        if let Some(why) = self.unreachable.clone() {
            return Ok(self.cached(id, revision, rev, path, why, HubErrorKind::Unavailable));
        }
        match self.remote.head(id, rev, path) {
            Ok(Head::Found(meta)) => {
                self.cache.write_ref(id, revision, &meta.commit)?;
                self.pinned.insert(key, meta.commit.clone());
                let pointer = self.cache.pointer(id, &meta.commit, path);
                if pointer.is_file() {
                    return Ok(Ok(Some(pointer)));
                }
                let stage = format!("download {id}/{path}");
                let remote = &self.remote;
                self.cache.store_blob(id, &meta.etag, |f| {
                    remote.download(&meta, f, &stage, progress)
                })?;
                Ok(Ok(Some(self.cache.link(
                    id,
                    &meta.commit,
                    path,
                    &meta.etag,
                )?)))
            }
            Ok(Head::Absent(commit)) => {
                if let Some(c) = commit {
                    self.cache.mark_absent(id, &c, path)?;
                    self.cache.write_ref(id, revision, &c)?;
                    self.pinned.insert(key, c);
                }
                Ok(Ok(None))
            }
            Err(Failure::Unreachable(why)) => {
                let why = format!("no endpoint answered ({why})");
                self.unreachable = Some(why.clone());
                Ok(self.cached(id, revision, rev, path, why, HubErrorKind::Unavailable))
            }
            Err(Failure::Denied(why)) => {
                Ok(self.cached(id, revision, rev, path, why, HubErrorKind::NotFound))
            }
            Err(Failure::Error(e)) => Err(e),
        }
    }

    /// The cache's answer for `path`; a miss is an error of `kind` (the inner `Err`) saying
    /// `why` the endpoint was not used.
    fn cached(
        &self,
        id: &RepoId,
        revision: &str,
        rev: &str,
        path: &str,
        why: String,
        kind: HubErrorKind,
    ) -> Result<Option<PathBuf>, HubError> {
        match self.cache.lookup(id, rev, path) {
            Lookup::Found(p) => {
                if self.settings.offline {
                    tracing::debug!("{id}: {why}; using the cached {}", p.display());
                } else {
                    tracing::warn!("{id}: {why}; using the cached {}", p.display());
                }
                Ok(Some(p))
            }
            Lookup::Absent => Ok(None),
            Lookup::Miss(looked) => Err(HubError::new(
                kind,
                format!(
                    "{id} revision \"{revision}\" file {path} is not in the Hugging Face cache \
                     {} (looked for {}), and {why}",
                    self.cache.root.display(),
                    looked
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            )),
        }
    }
}
