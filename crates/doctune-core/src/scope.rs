//! Path confinement. A [`Scope`] is a canonical root folder; every path that comes from the UI,
//! the command line or a file on disk is resolved through one before it is opened.
//!
//! Rules: the input may be relative to the root or absolute; it may not contain `..`; the part of
//! it that exists is canonicalised (following symlinks) and must stay under the root; the part that
//! does not exist yet (a file about to be written) must be plain names.

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
}
