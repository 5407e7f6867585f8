//! Atomic file writes: write to a temporary file in the destination's folder, fsync it, rename it
//! over the destination, fsync the folder. A crash leaves either the old file or the new one.

use serde::Serialize;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = temp_beside(path)?;
    tmp.write_all(bytes)?;
    commit(tmp, path)
}

/// Writes `value` as pretty JSON (with a trailing newline) to `path` atomically.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// A temporary file in the same folder as `dest` (so the final rename stays on one filesystem).
/// Dropping it without [`commit`] removes it.
pub fn temp_beside(dest: &Path) -> io::Result<tempfile::NamedTempFile> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tempfile::Builder::new()
        .prefix(".doctune-tmp-")
        .tempfile_in(dir)
}

/// Flushes `tmp` to disk and renames it to `dest`, replacing what was there.
pub fn commit(tmp: tempfile::NamedTempFile, dest: &Path) -> io::Result<()> {
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    sync_parent(dest)
}

/// Flushes `tmp` to disk and renames it into `dir` under the first of `names` that does not
/// exist there yet (never replacing a file); returns the name used.
pub fn commit_unique(
    tmp: tempfile::NamedTempFile,
    dir: &Path,
    names: impl IntoIterator<Item = String>,
) -> io::Result<String> {
    tmp.as_file().sync_all()?;
    let mut tmp = tmp;
    for name in names {
        let dest = dir.join(&name);
        match tmp.persist_noclobber(&dest) {
            Ok(_) => {
                sync_parent(&dest)?;
                return Ok(name);
            }
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => tmp = e.file,
            Err(e) => return Err(e.error),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{}: every candidate name is taken", dir.display()),
    ))
}

fn sync_parent(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::File::open(parent)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_json_atomic(&p, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "{\n  \"a\": 1\n}\n");
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_temp_dropped_before_commit_leaves_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"old").unwrap();
        {
            let mut t = temp_beside(&p).unwrap();
            t.write_all(b"half of the new").unwrap();
            // dropped: the "crash"
        }
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn commit_unique_never_clobbers() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"old").unwrap();
        let mut t = temp_beside(&p).unwrap();
        t.write_all(b"new").unwrap();
        let name = commit_unique(t, d.path(), ["f".to_string(), "f (2)".to_string()]).unwrap();
        assert_eq!(name, "f (2)");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read(d.path().join("f (2)")).unwrap(), b"new");
        let t = temp_beside(&p).unwrap();
        let err = commit_unique(t, d.path(), ["f".to_string()]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            2,
            "the temp file is removed"
        );
    }
}
