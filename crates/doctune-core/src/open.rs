//! Opening files so that what was checked is what is used. A path is checked (through a
//! [`Scope`](crate::Scope), or as a regular file) and then opened *without following a link in its
//! last component*; everything after that — the size check, the read, the copy — works on the open
//! handle, never on the name again. [`Scope::open`](crate::Scope::open) also compares the handle's
//! device and inode with the checked path's, so a folder swapped for a link between the check and
//! the open is caught too.
//!
//! Mechanisms: `O_NOFOLLOW` on Unix (Linux, macOS; tested on Linux), and on Windows
//! `FILE_FLAG_OPEN_REPARSE_POINT` with the opened handle refused when it is a reparse point.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

#[cfg(unix)]
fn no_follow(o: &mut OpenOptions) -> &mut OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    o.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
}

#[cfg(windows)]
fn no_follow(o: &mut OpenOptions) -> &mut OpenOptions {
    use std::os::windows::fs::OpenOptionsExt;
    const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
    o.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
}

#[cfg(not(any(unix, windows)))]
fn no_follow(o: &mut OpenOptions) -> &mut OpenOptions {
    o
}

/// Whether an `open` error means the last component was a link (what `O_NOFOLLOW` reports).
fn link_error(e: io::Error) -> io::Error {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ELOOP) {
        return io::Error::new(io::ErrorKind::InvalidInput, "is a symbolic link");
    }
    e
}

/// Opens `path` for reading without following a link in its last component, and returns it only
/// if the opened handle is a regular file (not a link, folder, FIFO or device; a FIFO is opened
/// non-blocking so that the check cannot hang).
pub fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    let mut o = OpenOptions::new();
    o.read(true);
    no_follow(&mut o);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
    }
    let file = o.open(path).map_err(link_error)?;
    let meta = file.metadata()?;
    if meta.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a symbolic link",
        ));
    }
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is not a regular file",
        ));
    }
    // `O_NONBLOCK` stays set: it changes nothing for a regular file.
    Ok((file, meta))
}

/// Creates `path` for writing; fails if anything (a file, or a link to anywhere) is already there.
pub fn create_new(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    no_follow(&mut o);
    o.open(path).map_err(link_error)
}

/// Opens an existing regular file for appending (a download that resumes), never through a link.
pub fn open_append(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).append(true);
    no_follow(&mut o);
    let file = o.open(path).map_err(link_error)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is not a regular file",
        ));
    }
    Ok(file)
}

/// Whether two metadata describe the same file (device and inode on Unix; on other systems the
/// size and modification time, the best the standard library offers).
pub fn same_file(a: &Metadata, b: &Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        a.len() == b.len() && a.modified().ok() == b.modified().ok()
    }
}

/// Reads an open regular file of `len` bytes (from its metadata) whole if `len` is at most
/// `limit`, through [`read_to_end_limited`].
pub fn read_checked(file: &mut File, len: u64, limit: u64) -> io::Result<Vec<u8>> {
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is {len} bytes; the limit is {limit} bytes"),
        ));
    }
    read_to_end_limited(file, limit)
}

/// Reads an open file to its end, at most `limit` bytes: a file that grew past its checked size
/// after the check is refused, not read into memory whole.
pub fn read_to_end_limited(file: &mut File, limit: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is more than {limit} bytes; the limit is {limit} bytes"),
        ));
    }
    Ok(out)
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn is_no_space(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded {
        return true;
    }
    #[cfg(unix)]
    if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_and_folders_are_refused_on_the_handle() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.txt");
        std::fs::write(&f, b"abc").unwrap();
        let (mut file, meta) = open_regular(&f).unwrap();
        assert_eq!(meta.len(), 3);
        assert_eq!(read_to_end_limited(&mut file, 3).unwrap(), b"abc");
        assert!(open_regular(d.path()).is_err());
        #[cfg(unix)]
        {
            let l = d.path().join("link");
            std::os::unix::fs::symlink(&f, &l).unwrap();
            let e = open_regular(&l).unwrap_err();
            assert!(e.to_string().contains("symbolic link"), "{e}");
            let e = create_new(&l).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
            let fifo = d.path().join("fifo");
            assert!(std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success());
            let e = open_regular(&fifo).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn a_file_that_grew_past_its_limit_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a");
        std::fs::write(&f, vec![0u8; 10]).unwrap();
        let (mut file, _) = open_regular(&f).unwrap();
        let e = read_to_end_limited(&mut file, 9).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
