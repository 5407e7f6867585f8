//! Path confinement. A [`Scope`] is a canonical root folder; every path that comes from the UI,
//! the command line or a file on disk is resolved through one before it is opened.
//!
//! Rules: the input may be relative to the root or absolute; it may not contain `..`; the part of
//! it that exists is canonicalised (following symlinks) and must stay under the root; the part that
//! does not exist yet (a file about to be written) must be plain names.

use std::fs::{File, Metadata};
use std::io;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("{path}: contains '..'; paths must stay inside {root}")]
    ParentComponent { path: PathBuf, root: PathBuf },
    #[error("{path}: resolves to {resolved}, which is outside {root}")]
    Escapes {
        path: PathBuf,
        resolved: PathBuf,
        root: PathBuf,
    },
    #[error("{path}: not a folder")]
    RootNotDir { path: PathBuf },
    #[error("{path}: changed while it was being opened (a file or folder on the way was replaced); nothing was read")]
    Changed { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A folder that paths must stay inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    root: PathBuf,
}

impl Scope {
    /// Makes a scope of an existing folder (canonicalised, so later checks compare real paths).
    pub fn new(root: impl AsRef<Path>) -> Result<Self, ScopeError> {
        let root = root.as_ref();
        let canonical = root.canonicalize().map_err(|source| ScopeError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        if !canonical.is_dir() {
            return Err(ScopeError::RootNotDir {
                path: root.to_path_buf(),
            });
        }
        Ok(Self { root: canonical })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `path` (relative to the root, or absolute) to a canonical path inside the root.
    /// The path need not exist; the part of it that does is followed through symlinks.
    pub fn resolve(&self, path: impl AsRef<Path>) -> Result<PathBuf, ScopeError> {
        let path = path.as_ref();
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(ScopeError::ParentComponent {
                path: path.to_path_buf(),
                root: self.root.clone(),
            });
        }
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.root.join(path)
        };
        // Split into the longest existing prefix and the (plain-name) remainder.
        let mut existing = joined.as_path();
        let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
        loop {
            match existing.symlink_metadata() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match (existing.parent(), existing.file_name()) {
                        (Some(parent), Some(name)) => {
                            rest.push(name);
                            existing = parent;
                        }
                        _ => {
                            return Err(ScopeError::Io {
                                path: path.to_path_buf(),
                                source: e,
                            })
                        }
                    }
                }
                Err(source) => {
                    return Err(ScopeError::Io {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        }
        let mut resolved = existing.canonicalize().map_err(|source| ScopeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        for name in rest.into_iter().rev() {
            resolved.push(name);
        }
        if !resolved.starts_with(&self.root) {
            return Err(ScopeError::Escapes {
                path: path.to_path_buf(),
                resolved,
                root: self.root.clone(),
            });
        }
        Ok(resolved)
    }

    /// The scope a model folder's files are read through: the folder itself, or for a snapshot
    /// in Hugging Face's cache layout (`…/models--org--name/snapshots/<commit>`) the repository's
    /// cache folder, so that the snapshot's links into its `blobs/` stay allowed and every other
    /// link out of the folder is refused.
    pub fn of_model_folder(dir: impl AsRef<Path>) -> Result<Self, ScopeError> {
        let dir = dir.as_ref();
        let canonical = dir.canonicalize().map_err(|source| ScopeError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let repo = canonical
            .parent()
            .filter(|p| p.file_name().is_some_and(|n| n == "snapshots"))
            .and_then(Path::parent)
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("models--"))
            });
        Self::new(repo.unwrap_or(&canonical))
    }

    /// Opens the file `path` of a model folder (its parent) through that folder's scope
    /// ([`Self::of_model_folder`]): the folder's own path may be any spelling of it (relative,
    /// with `..`); the file inside it may not lead out of it except into a Hub snapshot's blobs.
    pub fn open_model_file(path: impl AsRef<Path>) -> Result<(File, Metadata), ScopeError> {
        let path = path.as_ref();
        let io = |source| ScopeError::Io {
            path: path.to_path_buf(),
            source,
        };
        let (dir, name) = match (path.parent(), path.file_name()) {
            (Some(d), Some(n)) => (
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                },
                n,
            ),
            _ => {
                return Err(io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a file path",
                )))
            }
        };
        let dir = dir.canonicalize().map_err(io)?;
        Self::of_model_folder(&dir)?.open(dir.join(name))
    }

    /// The bytes of a model folder's file, at most `limit` (see [`Self::open_model_file`]).
    pub fn read_model_file(path: impl AsRef<Path>, limit: u64) -> Result<Vec<u8>, ScopeError> {
        let path = path.as_ref();
        let (mut file, meta) = Self::open_model_file(path)?;
        Self::read_open(path, &mut file, &meta, limit)
    }

    /// Opens the regular file `path` resolves to for reading, and checks that the open handle is
    /// still the file the path names inside the root (see [`crate::open`]): a link swapped in
    /// anywhere on the way between the check and the open is refused, never followed out.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<(File, Metadata), ScopeError> {
        let path = path.as_ref();
        let resolved = self.resolve(path)?;
        let io = |source| ScopeError::Io {
            path: path.to_path_buf(),
            source,
        };
        let (file, meta) = crate::open::open_regular(&resolved).map_err(io)?;
        let again = self.resolve(path)?;
        let now = again.symlink_metadata().map_err(io)?;
        if again != resolved || !crate::open::same_file(&meta, &now) {
            return Err(ScopeError::Changed {
                path: path.to_path_buf(),
            });
        }
        Ok((file, meta))
    }

    /// The bytes of the regular file `path` inside the root, at most `limit` (see [`Self::open`]).
    pub fn read_limited(&self, path: impl AsRef<Path>, limit: u64) -> Result<Vec<u8>, ScopeError> {
        let path = path.as_ref();
        let (mut file, meta) = self.open(path)?;
        Self::read_open(path, &mut file, &meta, limit)
    }

    fn read_open(
        path: &Path,
        file: &mut File,
        meta: &Metadata,
        limit: u64,
    ) -> Result<Vec<u8>, ScopeError> {
        crate::open::read_checked(file, meta.len(), limit).map_err(|source| ScopeError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Whether `path` resolves inside the root.
    pub fn contains(&self, path: impl AsRef<Path>) -> bool {
        self.resolve(path).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn setup() -> (tempfile::TempDir, Scope) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("proj");
        fs::create_dir_all(root.join("documents")).unwrap();
        fs::write(root.join("documents/a.txt"), b"a").unwrap();
        fs::write(dir.path().join("secret.txt"), b"s").unwrap();
        let scope = Scope::new(&root).unwrap();
        (dir, scope)
    }

    #[test]
    fn relative_and_absolute_paths_inside_resolve() {
        let (_d, s) = setup();
        let r = s.resolve("documents/a.txt").unwrap();
        assert_eq!(r, s.root().join("documents/a.txt"));
        assert_eq!(s.resolve(&r).unwrap(), r);
        // Not yet existing files under existing folders are fine.
        assert_eq!(
            s.resolve("documents/new/b.txt").unwrap(),
            s.root().join("documents/new/b.txt")
        );
    }

    #[test]
    fn parent_components_are_refused_even_when_they_come_back() {
        let (_d, s) = setup();
        assert!(matches!(
            s.resolve("../secret.txt"),
            Err(ScopeError::ParentComponent { .. })
        ));
        assert!(matches!(
            s.resolve("documents/../documents/a.txt"),
            Err(ScopeError::ParentComponent { .. })
        ));
    }

    #[test]
    fn absolute_paths_outside_are_refused() {
        let (d, s) = setup();
        let err = s.resolve(d.path().join("secret.txt")).unwrap_err();
        assert!(matches!(err, ScopeError::Escapes { .. }), "{err}");
        assert!(err.to_string().contains("secret.txt"));
        assert!(!s.contains("/etc/passwd"));
    }

    #[test]
    fn sibling_with_common_prefix_is_outside() {
        let (d, s) = setup();
        fs::create_dir_all(d.path().join("proj-evil")).unwrap();
        fs::write(d.path().join("proj-evil/x"), b"x").unwrap();
        assert!(s.resolve(d.path().join("proj-evil/x")).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn symlink_escapes_are_refused_and_inner_links_allowed() {
        let (d, s) = setup();
        std::os::unix::fs::symlink(d.path().join("secret.txt"), s.root().join("link")).unwrap();
        assert!(matches!(s.resolve("link"), Err(ScopeError::Escapes { .. })));
        // A link to a folder outside, then a new file below it, is still outside.
        std::os::unix::fs::symlink(d.path(), s.root().join("out")).unwrap();
        assert!(matches!(
            s.resolve("out/newfile"),
            Err(ScopeError::Escapes { .. })
        ));
        std::os::unix::fs::symlink(s.root().join("documents/a.txt"), s.root().join("inner"))
            .unwrap();
        assert_eq!(
            s.resolve("inner").unwrap(),
            s.root().join("documents/a.txt")
        );
    }

    #[cfg(unix)]
    #[test]
    fn dangling_symlink_is_not_treated_as_a_new_file() {
        let (d, s) = setup();
        // A dangling link pointing outside must not let a write through it land outside.
        std::os::unix::fs::symlink(d.path().join("not-yet"), s.root().join("dangling")).unwrap();
        assert!(s.resolve("dangling").is_err());
    }

    #[test]
    fn root_must_be_an_existing_folder() {
        let (d, _s) = setup();
        assert!(matches!(
            Scope::new(d.path().join("secret.txt")),
            Err(ScopeError::RootNotDir { .. })
        ));
        assert!(matches!(
            Scope::new(d.path().join("missing")),
            Err(ScopeError::Io { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn model_folders_allow_their_hub_blobs_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("hub/models--org--m");
        let snap = repo.join("snapshots/0123");
        fs::create_dir_all(&snap).unwrap();
        fs::create_dir_all(repo.join("blobs")).unwrap();
        fs::write(repo.join("blobs/abc"), b"{}").unwrap();
        std::os::unix::fs::symlink("../../blobs/abc", snap.join("config.json")).unwrap();
        fs::write(d.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), snap.join("README.md")).unwrap();
        let s = Scope::of_model_folder(&snap).unwrap();
        assert_eq!(s.read_limited(snap.join("config.json"), 10).unwrap(), b"{}");
        assert!(matches!(
            s.read_limited(snap.join("README.md"), 10),
            Err(ScopeError::Escapes { .. })
        ));
        // A plain folder is its own scope: a link to a sibling folder's file is outside.
        let plain = d.path().join("plain");
        fs::create_dir_all(&plain).unwrap();
        std::os::unix::fs::symlink(repo.join("blobs/abc"), plain.join("config.json")).unwrap();
        let s = Scope::of_model_folder(&plain).unwrap();
        assert!(s.read_limited(plain.join("config.json"), 10).is_err());
        let e = s.read_limited(plain.join("missing"), 10).unwrap_err();
        assert!(matches!(e, ScopeError::Io { .. }), "{e}");
    }

    #[test]
    fn open_reads_through_the_handle_with_a_limit() {
        let (_d, s) = setup();
        assert_eq!(s.read_limited("documents/a.txt", 1).unwrap(), b"a");
        let e = s.read_limited("documents/a.txt", 0).unwrap_err();
        assert!(e.to_string().contains("limit is 0 bytes"), "{e}");
        assert!(s.open("documents").is_err());
    }
}
