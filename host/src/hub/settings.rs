//! Where the cache is, which endpoint to ask and with which token, read from the environment
//! variables huggingface_hub reads.

use super::error::HubError;
use std::path::PathBuf;

/// The default endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The Hub settings of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The cache directory (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`).
    pub cache: PathBuf,
    /// The endpoint (`HF_ENDPOINT`, default `https://huggingface.co`), without a trailing `/`.
    pub endpoint: String,
    /// The token (`HF_TOKEN`, else the file `HF_TOKEN_PATH`, else `$HF_HOME/token`).
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE=1`: only the cache is used.
    pub offline: bool,
}

impl Settings {
    /// The settings from this process's environment.
    pub fn from_env() -> Result<Settings, HubError> {
        Settings::from_vars(|k| std::env::var(k).ok())
    }

    /// The settings from the variables `var` returns (empty values count as unset).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Settings, HubError> {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let home = || {
            var("HOME").map(PathBuf::from).ok_or_else(|| {
                HubError::invalid(
                    "cannot place the Hugging Face cache: none of HF_HUB_CACHE, HF_HOME, \
                     XDG_CACHE_HOME and HOME is set",
                )
            })
        };
        let hf_home = match var("HF_HOME") {
            Some(h) => PathBuf::from(h),
            None => match var("XDG_CACHE_HOME") {
                Some(x) => PathBuf::from(x).join("huggingface"),
                None => home()?.join(".cache").join("huggingface"),
            },
        };
        let cache = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = var("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(HubError::invalid(format!(
                "HF_ENDPOINT \"{endpoint}\" must start with http:// or https://"
            )));
        }
        let token = match var("HF_TOKEN") {
            Some(t) => Some(t.trim().to_string()),
            None => {
                let file = var("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                match std::fs::read_to_string(&file) {
                    Ok(t) => Some(t.trim().to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(HubError::io("cannot read the token file", &file, e)),
                }
            }
        }
        .filter(|t| !t.is_empty());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "on" | "yes" | "true")
        });
        Ok(Settings {
            cache,
            endpoint,
            token,
            offline,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, HubError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn cache_location_follows_huggingface_hub() {
        let s = settings(&[("HOME", "/h")]).unwrap();
        assert_eq!(s.cache, PathBuf::from("/h/.cache/huggingface/hub"));
        assert_eq!(s.endpoint, DEFAULT_ENDPOINT);
        assert!(!s.offline && s.token.is_none());
        let s = settings(&[("HOME", "/h"), ("HF_HOME", "/hf")]).unwrap();
        assert_eq!(s.cache, PathBuf::from("/hf/hub"));
        let s = settings(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c")]).unwrap();
        assert_eq!(s.cache, PathBuf::from("/c"));
        let s = settings(&[("XDG_CACHE_HOME", "/x")]).unwrap();
        assert_eq!(s.cache, PathBuf::from("/x/huggingface/hub"));
        let e = settings(&[]).unwrap_err();
        assert!(e.message.contains("HF_HUB_CACHE"), "{e}");
    }

    #[test]
    fn endpoint_token_and_offline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        let home = dir.path().to_str().unwrap();
        let s = settings(&[
            ("HF_HOME", home),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_HUB_OFFLINE", "1"),
        ])
        .unwrap();
        assert_eq!(s.endpoint, "http://127.0.0.1:9");
        assert_eq!(s.token.as_deref(), Some("hf_file"));
        assert!(s.offline);
        let s = settings(&[("HF_HOME", home), ("HF_TOKEN", "hf_env")]).unwrap();
        assert_eq!(s.token.as_deref(), Some("hf_env"));
        let e = settings(&[("HF_HOME", home), ("HF_ENDPOINT", "ftp://x")]).unwrap_err();
        assert!(e.message.contains("ftp://x"), "{e}");
    }
}
