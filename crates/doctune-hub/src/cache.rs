//! DocTune's Hub cache: Hugging Face's cache layout (`models--org--name/blobs/<hash>`,
//! `snapshots/<commit>/<file>` links into `blobs/`, `refs/<revision>`), written only by this
//! module and only through a [`Scope`] rooted at the cache folder. Every name that reaches a path
//! here has been checked first: the repository id ([`check_repo_id`]), the commit (40 hex
//! characters, [`check_commit`]), the blob name (the listing's sha256 or git blob id, hex), the
//! file name ([`files::is_allowed`](crate::files::is_allowed): a top-level name) and the revision
//! ([`check_revision`]). Nothing a server sends is joined into a path unchecked.

use crate::HubError;
use doctune_core::Scope;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Whether `s` is `len` lowercase hexadecimal characters.
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A commit id as the Hub gives it: 40 lowercase hex characters.
pub fn check_commit(commit: &str) -> Result<(), String> {
    if is_hex(commit, 40) {
        Ok(())
    } else {
        Err(format!(
            "a commit id that is not 40 hex characters ({})",
            shown(commit)
        ))
    }
}

/// A blob name: a sha256 (64 hex) or a git blob id (40 hex).
pub fn check_blob_hash(hash: &str) -> Result<(), String> {
    if is_hex(hash, 64) || is_hex(hash, 40) {
        Ok(())
    } else {
        Err(format!(
            "a file hash that is not 40 or 64 hex characters ({})",
            shown(hash)
        ))
    }
}

/// A repository id: `owner/name` (or a legacy `name`), each part letters, digits, `-`, `_`, `.`,
/// not starting with `.`.
pub fn check_repo_id(repo: &str) -> Result<(), HubError> {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && !p.starts_with('.')
            && !p.contains("..")
            && !p.contains("--")
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match repo.split_once('/') {
        Some((owner, name)) if ok_part(owner) && ok_part(name) => Ok(()),
        None if ok_part(repo) => Ok(()),
        _ => Err(HubError::NotAModel {
            repo: shown(repo),
            reason: "not a Hub repository id; expected owner/name (letters, digits, '-', '_', '.')"
                .into(),
        }),
    }
}

/// A revision the user asked for: a branch or tag name (letters, digits, `-`, `_`, `.`, `/`, no
/// `..`, not starting with `/` or `.`) or a commit id.
pub fn check_revision(repo: &str, revision: &str) -> Result<(), HubError> {
    let ok = !revision.is_empty()
        && revision.len() <= 200
        && !revision.starts_with(['/', '.'])
        && !revision.ends_with('/')
        && !revision.contains("..")
        && !revision.contains("//")
        && revision
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(HubError::NotAModel {
            repo: repo.into(),
            reason: format!("{} is not a branch, tag or commit name", shown(revision)),
        })
    }
}

/// A value from a server or a user, safe to put in a message: at most 80 characters, control
/// characters escaped.
pub fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    format!("\"{out}\"")
}

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    scope: Scope,
    rel: PathBuf,
}

impl RepoCache {
    /// The cache folder of `repo` (checked with [`check_repo_id`]) under `cache_dir`, which is
    /// created if missing.
    pub fn new(cache_dir: &Path, repo: &str) -> Result<Self, HubError> {
        check_repo_id(repo)?;
        std::fs::create_dir_all(cache_dir).map_err(|e| HubError::io(cache_dir, e))?;
        let scope = Scope::new(cache_dir).map_err(HubError::Scope)?;
        Ok(Self {
            scope,
            rel: PathBuf::from(format!("models--{}", repo.replace('/', "--"))),
        })
    }

    /// The cache folder everything is written under.
    pub fn root(&self) -> &Path {
        self.scope.root()
    }

    fn path(&self, rel: impl AsRef<Path>) -> Result<PathBuf, HubError> {
        let rel = self.rel.join(rel);
        self.scope.resolve(&rel).map_err(HubError::Scope)
    }

    fn dir(&self, rel: &str) -> Result<PathBuf, HubError> {
        let p = self.path(rel)?;
        std::fs::create_dir_all(&p).map_err(|e| HubError::io(&p, e))?;
        // Created folders are checked again: a link planted on the way is caught here.
        self.path(rel)
    }

    /// `blobs/<hash>`: where a verified file is kept.
    pub fn blob(&self, hash: &str) -> Result<PathBuf, HubError> {
        check_blob_hash(hash).map_err(|d| self.untrusted(d))?;
        self.dir("blobs")?;
        self.path(format!("blobs/{hash}"))
    }

    /// `blobs/<hash>.incomplete`: a download in progress, appended to and resumed.
    pub fn partial(&self, hash: &str) -> Result<PathBuf, HubError> {
        check_blob_hash(hash).map_err(|d| self.untrusted(d))?;
        self.dir("blobs")?;
        self.path(format!("blobs/{hash}.incomplete"))
    }

    /// `snapshots/<commit>`, created.
    pub fn snapshot_dir(&self, commit: &str) -> Result<PathBuf, HubError> {
        check_commit(commit).map_err(|d| self.untrusted(d))?;
        self.dir(&format!("snapshots/{commit}"))
    }

    /// The file `name` of snapshot `commit` as a path inside this repository's folder (the link
    /// resolved), if it is there.
    pub fn get(&self, commit: &str, name: &str) -> Option<PathBuf> {
        check_commit(commit).ok()?;
        if !crate::files::is_allowed(name) {
            return None;
        }
        let p = self.path(format!("snapshots/{commit}/{name}")).ok()?;
        p.is_file().then_some(p)
    }

    /// Opens a cached file (see [`Scope::open`]).
    pub fn open(&self, path: &Path) -> Result<File, HubError> {
        self.scope
            .open(path)
            .map(|(f, _)| f)
            .map_err(HubError::Scope)
    }

    /// Points `snapshots/<commit>/<name>` at `blobs/<hash>` (a relative link; a copy where the
    /// system cannot make links), replacing an old entry of that name.
    pub fn link(&self, commit: &str, name: &str, hash: &str) -> Result<PathBuf, HubError> {
        if !crate::files::is_allowed(name) {
            return Err(
                self.untrusted(format!("a file name DocTune never takes ({})", shown(name)))
            );
        }
        let blob = self.blob(hash)?;
        let dir = self.snapshot_dir(commit)?;
        let pointer = dir.join(name);
        match std::fs::remove_file(&pointer) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(HubError::io(&pointer, e)),
        }
        #[cfg(unix)]
        let made = std::os::unix::fs::symlink(format!("../../blobs/{hash}"), &pointer);
        #[cfg(windows)]
        let made = std::os::windows::fs::symlink_file(format!("..\\..\\blobs\\{hash}"), &pointer)
            .or_else(|_| std::fs::copy(&blob, &pointer).map(|_| ()));
        #[cfg(not(any(unix, windows)))]
        let made = std::fs::copy(&blob, &pointer).map(|_| ());
        made.map_err(|e| HubError::io(&pointer, e))?;
        let _ = blob;
        self.path(format!("snapshots/{commit}/{name}"))
    }

    /// Records that `revision` (checked with [`check_revision`]) is at `commit`.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        check_commit(commit).map_err(|d| self.untrusted(d))?;
        if revision == commit {
            return Ok(());
        }
        let rel = format!("refs/{revision}");
        let parent = Path::new(&rel)
            .parent()
            .and_then(|p| p.to_str())
            .unwrap_or("refs")
            .to_string();
        self.dir(&parent)?;
        let p = self.path(&rel)?;
        doctune_core::write_atomic(&p, commit.as_bytes()).map_err(|e| HubError::io(&p, e))
    }

    /// Removes a cached file: the blob and, if given, the snapshot entry pointing at it.
    pub fn remove(&self, hash: &str, pointer: Option<(&str, &str)>) {
        if let Ok(b) = self.blob(hash) {
            let _ = std::fs::remove_file(b);
        }
        if let Some((commit, name)) = pointer {
            if check_commit(commit).is_ok() && crate::files::is_allowed(name) {
                if let Ok(p) = self.path(format!("snapshots/{commit}")) {
                    let _ = std::fs::remove_file(p.join(name));
                }
            }
        }
    }

    fn untrusted(&self, detail: String) -> HubError {
        HubError::Untrusted {
            what: "the Hub's answer".into(),
            detail,
        }
    }
}
