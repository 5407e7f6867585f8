//! Reading small files whole, with a size limit checked before reading, so a hostile or broken
//! folder (a multi-gigabyte `config.json`) cannot exhaust memory.

use std::io;
use std::path::Path;

/// The file's bytes, if it is a regular file of at most `limit` bytes; otherwise an error that
/// says which limit it broke (`InvalidData`) or why it could not be read.
pub fn read_limited(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is not a regular file",
        ));
    }
    if meta.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is {} bytes; the limit is {limit} bytes", meta.len()),
        ));
    }
    std::fs::read(path)
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
