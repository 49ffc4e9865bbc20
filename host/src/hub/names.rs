//! The names the Hub takes: repository ids, revisions, file paths in a repository, weight
//! variants; each checked before it reaches a URL or a cache path.

use super::error::HubError;
use std::fmt;

/// A model repository id, `org/name` (letters, digits, `-`, `_`, `.`; at most 96 characters,
/// no `--` or `..`, as huggingface_hub's `validate_repo_id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoId {
    org: String,
    name: String,
}

impl RepoId {
    /// Parses `org/name`.
    pub fn parse(id: &str) -> Result<RepoId, HubError> {
        let bad = |why: &str| {
            HubError::invalid(format!(
                "\"{id}\" is not a Hugging Face Hub id (org/name): {why}"
            ))
        };
        if id.len() > 96 {
            return Err(bad("longer than 96 characters"));
        }
        let Some((org, name)) = id.split_once('/') else {
            return Err(bad("no '/' between the organization and the name"));
        };
        for part in [org, name] {
            if part.is_empty() {
                return Err(bad("an empty part"));
            }
            if let Some(c) = part
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            {
                return Err(bad(&format!("character {c:?} is not allowed")));
            }
            if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
                return Err(bad("a part starts or ends with '-' or '.'"));
            }
            if part.contains("--") || part.contains("..") {
                return Err(bad("'--' and '..' are not allowed"));
            }
        }
        Ok(RepoId {
            org: org.to_string(),
            name: name.to_string(),
        })
    }

    /// The cache folder name, `models--org--name`.
    pub fn folder_name(&self) -> String {
        format!("models--{}--{}", self.org, self.name)
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.org, self.name)
    }
}

/// True for a full 40-digit lowercase hexadecimal commit hash.
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40
        && revision
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a revision (a branch, a tag such as `v1.0`, `refs/pr/1`, or a commit hash): it becomes
/// a URL segment and a path under `refs/`, so no empty, `.` or `..` component and no character
/// outside letters, digits and `-_./`.
pub fn check_revision(revision: &str) -> Result<(), HubError> {
    check_path(revision).map_err(|why| {
        HubError::invalid(format!(
            "revision \"{revision}\" is not a branch, tag or commit: {why}"
        ))
    })
}

/// Checks a file path inside a repository (`vae/config.json`): relative, `/`-separated, no empty,
/// `.` or `..` component, letters, digits and `-_.` only.
pub fn check_repo_path(path: &str, what: &str) -> Result<(), HubError> {
    check_path(path).map_err(|why| HubError::invalid(format!("{what} \"{path}\": {why}")))
}

fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("it is empty".into());
    }
    if p.len() > 255 {
        return Err("longer than 255 characters".into());
    }
    for part in p.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!("component {part:?} is not allowed"));
        }
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
    {
        return Err(format!("character {c:?} is not allowed"));
    }
    Ok(())
}

/// Checks a weights variant (`fp16`): it goes into a file name, so letters, digits, `-` and `_`.
pub fn check_variant(variant: &str) -> Result<(), HubError> {
    if variant.is_empty()
        || !variant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        return Err(HubError::invalid(format!(
            "variant \"{variant}\" must be letters, digits, '-' and '_' (e.g. fp16)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        let id = RepoId::parse("stabilityai/sd-vae-ft-mse").unwrap();
        assert_eq!(id.folder_name(), "models--stabilityai--sd-vae-ft-mse");
        assert_eq!(id.to_string(), "stabilityai/sd-vae-ft-mse");
        for (bad, why) in [
            ("noslash", "no '/'"),
            ("a/b/c", "'/'"),
            ("a/", "empty"),
            ("../x", "starts or ends"),
            ("a--b/c", "'--'"),
            ("a/b c", "' '"),
        ] {
            let e = RepoId::parse(bad).unwrap_err();
            assert!(e.message.contains(bad) && e.message.contains(why), "{e}");
        }
    }

    #[test]
    fn revisions_paths_and_variants() {
        assert!(is_commit_hash("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit_hash("main"));
        assert!(!is_commit_hash("0123456789ABCDEF0123456789abcdef01234567"));
        for ok in ["main", "v1.0", "refs/pr/1"] {
            check_revision(ok).unwrap();
        }
        for bad in ["", "../main", "a//b", "a b", "x/.."] {
            let e = check_revision(bad).unwrap_err();
            assert!(e.message.contains(&format!("\"{bad}\"")), "{e}");
        }
        check_repo_path("vae/config.json", "file").unwrap();
        assert!(check_repo_path("/etc/passwd", "subfolder")
            .unwrap_err()
            .message
            .contains("subfolder \"/etc/passwd\""));
        check_variant("fp16").unwrap();
        assert!(check_variant("fp16/../x").is_err());
        assert!(check_variant("").is_err());
    }
}
