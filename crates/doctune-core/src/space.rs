//! Free disk space, checked before DocTune writes a lot (the extraction cache, a dataset, a
//! checkpoint, an export, a pull, an import). The check compares an estimate of the write with
//! the free bytes of the file system holding the folder (`statvfs` on Unix, the nearest existing
//! folder up the path). Where the figure cannot be told, the write goes ahead and is itself the
//! check: every such write is staged (a temporary file or folder renamed into place), so one that
//! fails for lack of space (`ENOSPC`, [`io::ErrorKind::StorageFull`]) leaves the previous state as
//! it was and ends in the same clear error.

use crate::units::human_bytes;
use std::io;
use std::path::Path;

/// Set `DOCTUNE_FREE_SPACE=unknown` to behave as on a file system whose free space cannot be
/// told (for tests and diagnosis): every check passes and the writes themselves are the check.
pub const FREE_SPACE_ENV: &str = "DOCTUNE_FREE_SPACE";

/// Whether [`FREE_SPACE_ENV`] asks to treat free space as unknown.
pub fn assume_unknown() -> bool {
    std::env::var(FREE_SPACE_ENV).is_ok_and(|v| v == "unknown")
}

/// Free bytes for an unprivileged writer on the file system holding `path` (or its nearest
/// existing ancestor), or `None` where that cannot be told.
pub fn free_bytes(path: &Path) -> Option<u64> {
    if assume_unknown() {
        return None;
    }
    let mut p = path;
    loop {
        if p.exists() {
            break;
        }
        p = p.parent()?;
    }
    #[cfg(unix)]
    {
        let st = rustix::fs::statvfs(p).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = p;
        None
    }
}

/// Fails with [`io::ErrorKind::StorageFull`] when the disk holding `dir` is known to have less
/// than `needed` bytes free; `what` names the write in the message ("the checkpoint").
pub fn ensure_room(dir: &Path, needed: u64, what: &str) -> io::Result<()> {
    match free_bytes(dir) {
        Some(free) if free < needed => Err(no_room(dir, needed, free, what)),
        _ => Ok(()),
    }
}

/// The error [`ensure_room`] returns.
pub fn no_room(dir: &Path, needed: u64, free: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        format!(
            "{what} needs about {} but the disk holding {} has {} free; free some space and try again (nothing was changed)",
            human_bytes(needed),
            dir.display(),
            human_bytes(free)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_of_a_folder_and_of_one_not_made_yet() {
        let d = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        {
            let free = free_bytes(d.path()).unwrap();
            assert!(free > 0);
            assert!(free_bytes(&d.path().join("not/yet")).is_some());
            let e = ensure_room(d.path(), u64::MAX, "the test").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::StorageFull);
            assert!(e.to_string().starts_with("the test needs about"), "{e}");
        }
        ensure_room(d.path(), 1, "the test").unwrap();
    }
}
