//! Reading small files whole, with a size limit checked before reading and enforced while
//! reading, on a handle opened without following links, so a hostile or broken folder (a
//! multi-gigabyte `config.json`, a file swapped for a link) cannot exhaust memory or redirect
//! the read.

use std::io;
use std::path::Path;

/// The file's bytes, if it is a regular file of at most `limit` bytes; otherwise an error that
/// says which limit it broke (`InvalidData`) or why it could not be read. A link in the last
/// component is refused (callers that allow links inside a folder resolve them through a
/// [`Scope`](crate::Scope) first and pass the resolved path).
pub fn read_limited(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let (mut file, meta) = crate::open::open_regular(path)?;
    crate::open::read_checked(&mut file, meta.len(), limit)
}

#[cfg(test)]
mod tests {
    #[test]
    fn refuses_large_files_and_folders() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        std::fs::write(&p, b"{}").unwrap();
        assert_eq!(super::read_limited(&p, 2).unwrap(), b"{}");
        let e = super::read_limited(&p, 1).unwrap_err();
        assert!(e.to_string().contains("limit is 1 bytes"), "{e}");
        assert!(super::read_limited(d.path(), 10).is_err());
    }
}
