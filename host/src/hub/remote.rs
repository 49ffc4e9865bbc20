//! An endpoint's `/{repo}/resolve/{revision}/{path}`: a HEAD for the file's commit, ETag and
//! size (following only relative redirects, as huggingface_hub does), then a GET of the
//! location it names (a CDN's signed URL, sent no token).

use super::error::{HubError, HubErrorKind};
use super::names::{is_commit_hash, RepoId};
use plugin_api::Progress;
use std::io::{Read, Write};
use std::time::Duration;

/// How many relative redirects a HEAD follows (a renamed repository answers one).
const MAX_REDIRECTS: usize = 10;

/// A file's metadata from the HEAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// `X-Repo-Commit`: the commit the revision resolved to.
    pub commit: String,
    /// `X-Linked-Etag`, else `ETag`, without quotes or `W/`: the blob's name.
    pub etag: String,
    /// `X-Linked-Size`, else `Content-Length`.
    pub size: u64,
    /// Where to GET it.
    pub location: String,
}

/// What a HEAD found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// The file exists.
    Found(Meta),
    /// The repository and revision exist but not the file (`X-Error-Code: EntryNotFound`); the
    /// commit, when the endpoint says it.
    Absent(Option<String>),
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer (connection refused, DNS, timeout) or a server error: the cache may still
    /// hold the file.
    Unreachable(String),
    /// Refused: 401/403, or the repository does not exist (the Hub answers 401 for both when no
    /// token is sent); the cache may still hold the file.
    Denied(String),
    /// Final: the revision does not exist, or the endpoint's answer is unusable.
    Error(HubError),
}

/// A Hub endpoint.
pub struct Remote {
    endpoint: String,
    token: Option<String>,
    /// Follows no redirect: relative ones are followed by hand.
    head_agent: ureq::Agent,
    /// Follows redirects (ureq sends no `Authorization` after one).
    get_agent: ureq::Agent,
}

impl Remote {
    /// A client of `endpoint` (no trailing `/`) sending `token`, if any.
    pub fn new(endpoint: &str, token: Option<String>) -> Remote {
        let builder = || {
            ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(10))
                .timeout_read(Duration::from_secs(60))
                .user_agent(concat!("mlhost/", env!("CARGO_PKG_VERSION")))
        };
        Remote {
            endpoint: endpoint.to_string(),
            token,
            head_agent: builder().redirects(0).build(),
            get_agent: builder().redirects(5).build(),
        }
    }

    /// `{endpoint}/{id}/resolve/{revision}/{path}` (the revision's `/` escaped, as the Hub wants).
    pub fn url(&self, id: &RepoId, revision: &str, path: &str) -> String {
        format!(
            "{}/{id}/resolve/{}/{path}",
            self.endpoint,
            revision.replace('/', "%2F")
        )
    }

    fn authorized(&self, req: ureq::Request) -> ureq::Request {
        match &self.token {
            Some(t) => req.set("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    /// HEADs `path` at `revision`.
    pub fn head(&self, id: &RepoId, revision: &str, path: &str) -> Result<Head, Failure> {
        let what = format!("{id} revision \"{revision}\" file {path}");
        let mut url = self.url(id, revision, path);
        let mut redirects = 0;
        let response = loop {
            let req = self
                .authorized(self.head_agent.head(&url))
                .set("Accept-Encoding", "identity");
            let response = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(code, r)) => {
                    return self.status_failure(code, &r, &url, &what)
                }
                Err(ureq::Error::Transport(t)) => return Err(Failure::Unreachable(t.to_string())),
            };
            let relative = response
                .header("Location")
                .filter(|l| l.starts_with('/') && !l.starts_with("//"))
                .map(str::to_string);
            match relative {
                Some(loc) if (300..400).contains(&response.status()) => {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        return Err(Failure::Error(HubError::new(
                            HubErrorKind::Unavailable,
                            format!("{what}: more than {MAX_REDIRECTS} redirects from {url}"),
                        )));
                    }
                    url = format!("{}{loc}", origin(&url));
                }
                _ => break response,
            }
        };
        let header = |name: &str| response.header(name).map(str::to_string);
        let unusable = |why: &str| {
            Failure::Error(HubError::invalid(format!(
                "{what}: the answer of {url} is not a Hub's ({why}); check HF_ENDPOINT"
            )))
        };
        let commit = header("X-Repo-Commit").ok_or_else(|| unusable("no X-Repo-Commit header"))?;
        if !is_commit_hash(&commit) {
            return Err(unusable("X-Repo-Commit is not a commit hash"));
        }
        let etag = header("X-Linked-Etag")
            .or_else(|| header("ETag"))
            .ok_or_else(|| unusable("no ETag header"))?;
        let etag = normalize_etag(&etag).ok_or_else(|| unusable("an ETag that is not a name"))?;
        let redirect = (300..400).contains(&response.status());
        let size = header("X-Linked-Size")
            .or_else(|| (!redirect).then(|| header("Content-Length")).flatten())
            .ok_or_else(|| unusable("no X-Linked-Size or Content-Length header"))?;
        let size: u64 = size
            .trim()
            .parse()
            .map_err(|_| unusable("a size that is not a number"))?;
        let location = if redirect {
            header("Location").ok_or_else(|| unusable("a redirect without Location"))?
        } else {
            url.clone()
        };
        Ok(Head::Found(Meta {
            commit,
            etag,
            size,
            location,
        }))
    }

    fn status_failure(
        &self,
        code: u16,
        response: &ureq::Response,
        url: &str,
        what: &str,
    ) -> Result<Head, Failure> {
        let error_code = response.header("X-Error-Code").unwrap_or("");
        match (code, error_code) {
            (404, "EntryNotFound") => Ok(Head::Absent(
                response
                    .header("X-Repo-Commit")
                    .filter(|c| is_commit_hash(c))
                    .map(str::to_string),
            )),
            (404, "RevisionNotFound") => Err(Failure::Error(HubError::new(
                HubErrorKind::NotFound,
                format!("{what}: the revision does not exist (404 from {url})"),
            ))),
            (401 | 403, _) | (404, "RepoNotFound" | "GatedRepo") => {
                let hint = if self.token.is_none() {
                    "the repository does not exist, or it is private or gated and no token was \
                     sent (set HF_TOKEN, or write the token to $HF_HOME/token)"
                } else {
                    "the repository does not exist, or the token (HF_TOKEN or $HF_HOME/token) \
                     gives no access to it"
                };
                Err(Failure::Denied(format!("{code} from {url}: {hint}")))
            }
            (404, _) => Err(Failure::Error(HubError::new(
                HubErrorKind::NotFound,
                format!("{what}: not found (404 from {url})"),
            ))),
            (c, _) if c >= 500 || c == 429 => {
                Err(Failure::Unreachable(format!("{url}: status {code}")))
            }
            _ => Err(Failure::Error(HubError::invalid(format!(
                "{what}: status {code} from {url}"
            )))),
        }
    }

    /// GETs `meta.location` into `out`, reporting bytes to `progress` as `stage`; the body must
    /// be exactly `meta.size` bytes.
    pub fn download(
        &self,
        meta: &Meta,
        out: &mut impl Write,
        stage: &str,
        progress: &dyn Progress,
    ) -> Result<(), HubError> {
        let fail = |why: String| {
            HubError::new(
                HubErrorKind::Unavailable,
                format!("downloading {}: {why}", meta.location),
            )
        };
        let mut req = self.get_agent.get(&meta.location);
        // A same-host location (a renamed repository, a small file) keeps the token; a CDN's
        // signed URL gets none.
        if origin(&meta.location) == origin(&self.endpoint) {
            req = self.authorized(req);
        }
        let response = req.call().map_err(|e| fail(e.to_string()))?;
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut done: u64 = 0;
        progress.report(stage.into(), 0, meta.size);
        loop {
            let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
            if n == 0 {
                break;
            }
            done = done.saturating_add(n as u64);
            if done > meta.size {
                return Err(fail(format!("more than the {} bytes announced", meta.size)));
            }
            out.write_all(&buf[..n])
                .map_err(|e| fail(format!("cannot write the file: {e}")))?;
            progress.report(stage.into(), done, meta.size);
        }
        if done != meta.size {
            return Err(fail(format!(
                "the body ended after {done} of {} bytes",
                meta.size
            )));
        }
        Ok(())
    }
}

/// `http://host:port` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// An ETag without `W/` and quotes, if it can name a file (letters, digits, `-`, `_`).
fn normalize_etag(etag: &str) -> Option<String> {
    let e = etag.trim();
    let e = e.strip_prefix("W/").unwrap_or(e).trim_matches('"');
    (!e.is_empty()
        && e.len() <= 128
        && e.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
    .then(|| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_etags() {
        assert_eq!(origin("http://127.0.0.1:8/a/b"), "http://127.0.0.1:8");
        assert_eq!(origin("https://hf.co"), "https://hf.co");
        assert_eq!(normalize_etag("W/\"abc-1\"").as_deref(), Some("abc-1"));
        assert_eq!(normalize_etag("\"../x\""), None);
        assert_eq!(normalize_etag("\"\""), None);
    }

    #[test]
    fn urls_escape_the_revision() {
        let r = Remote::new("http://h", None);
        let id = RepoId::parse("o/n").unwrap();
        assert_eq!(
            r.url(&id, "refs/pr/1", "vae/config.json"),
            "http://h/o/n/resolve/refs%2Fpr%2F1/vae/config.json"
        );
    }
}
