//! Folders that appear whole or not at all: a [`StagedDir`] is built under a hidden temporary
//! name beside its destination and renamed into place when complete. Every writer of a folder
//! (a dataset, a run's checkpoint, an imported model, an export) goes through it, so a crash,
//! a cancel or an error leaves either nothing or the finished folder — never half of one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A folder being built. Dropping it without [`commit`](Self::commit) removes it and
/// everything written into it.
#[derive(Debug)]
pub struct StagedDir {
    tmp: tempfile::TempDir,
    parent: PathBuf,
}

impl StagedDir {
    /// A new, empty staging folder in `parent` (created if missing), named
    /// `.{label}-staging-XXXXXX` so listings of `parent` skip it.
    pub fn new_in(parent: &Path, label: &str) -> io::Result<Self> {
        fs::create_dir_all(parent)?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{label}-staging-"))
            .tempdir_in(parent)?;
        Ok(Self {
            tmp,
            parent: parent.to_path_buf(),
        })
    }

    /// Where to write the folder's files.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Flushes every file to disk and renames the folder to `parent/name`, which must not exist
    /// (an existing folder is never replaced: `AlreadyExists`). Returns the final path.
    pub fn commit(self, name: &str) -> io::Result<PathBuf> {
        self.commit_first([name.to_string()])
    }

    /// Like [`commit`](Self::commit), under the first of `names` that does not exist yet.
    pub fn commit_first(self, names: impl IntoIterator<Item = String>) -> io::Result<PathBuf> {
        sync_tree(self.tmp.path())?;
        for name in names {
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{name}` is not a folder name"),
                ));
            }
            let dest = self.parent.join(&name);
            if dest.symlink_metadata().is_ok() {
                continue;
            }
            fs::rename(self.tmp.path(), &dest)?;
            // The temporary folder is gone (renamed): nothing left for the guard to remove.
            let _ = self.tmp.keep();
            sync_dir(&self.parent)?;
            return Ok(dest);
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{}: every candidate name is taken", self.parent.display()),
        ))
    }
}

/// fsyncs every regular file under `dir` (and the folders themselves on Unix).
fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            sync_tree(&entry.path())?;
        } else if ty.is_file() {
            fs::File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_committed_folder_appears_whole() {
        let d = tempfile::tempdir().unwrap();
        let s = StagedDir::new_in(&d.path().join("runs"), "run").unwrap();
        fs::create_dir(s.path().join("sub")).unwrap();
        fs::write(s.path().join("sub/a.json"), b"{}").unwrap();
        assert!(names(&d.path().join("runs"))[0].starts_with(".run-staging-"));
        let dest = s.commit("run-1").unwrap();
        assert_eq!(dest, d.path().join("runs/run-1"));
        assert_eq!(fs::read(dest.join("sub/a.json")).unwrap(), b"{}");
        assert_eq!(names(&d.path().join("runs")), vec!["run-1"]);
    }

    #[test]
    fn a_dropped_folder_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = StagedDir::new_in(d.path(), "export").unwrap();
            fs::write(s.path().join("half.gguf"), b"half").unwrap();
        }
        assert!(names(d.path()).is_empty());
    }

    #[test]
    fn never_replaces_an_existing_folder() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("x")).unwrap();
        let s = StagedDir::new_in(d.path(), "x").unwrap();
        let e = s.commit("x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(names(d.path()), vec!["x"], "the staging folder is removed");
        let s = StagedDir::new_in(d.path(), "x").unwrap();
        let p = s
            .commit_first(["x".to_string(), "x-2".to_string()])
            .unwrap();
        assert_eq!(p, d.path().join("x-2"));
        let s = StagedDir::new_in(d.path(), "x").unwrap();
        assert_eq!(
            s.commit("../y").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
