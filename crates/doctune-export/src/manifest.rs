//! `manifest.json`: what an export is (format, quantisation, the run and checkpoint it came
//! from, the base model) and every file it wrote with its size and sha256, so a user can verify
//! a copy; and the file list the report and the Export view show. The large files are hashed as
//! they are written ([`HashedFile`]), the small ones read back.

use crate::source::Source;
use crate::{io, ExportError, ExportRequest, Fallback};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The manifest's own name.
pub const MANIFEST: &str = "manifest.json";

/// One file of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportedFile {
    /// The path inside the export folder (`/`-separated).
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema: u32,
    pub created_at: String,
    pub doctune_version: String,
    pub format: crate::Format,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quant: Option<crate::Quant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<crate::Dtype>,
    pub run_id: String,
    pub step: u64,
    pub base_model: String,
    pub warnings: Vec<String>,
    pub fallbacks: Vec<Fallback>,
    /// Every file but the manifest itself.
    pub files: Vec<ExportedFile>,
}

/// The largest `manifest.json` [`read`] accepts.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// The manifest of the export in `dir`.
pub fn read(dir: &Path) -> Result<Manifest, ExportError> {
    let p = dir.join(MANIFEST);
    let bytes = doctune_core::read_limited(&p, MAX_MANIFEST_BYTES).map_err(io(&p))?;
    serde_json::from_slice(&bytes).map_err(|e| ExportError::Input {
        path: p,
        message: format!("not an export manifest: {e}"),
    })
}

/// A file's sha256 and size, as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHash {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
}

/// A new file, buffered and hashed as it is written, so the manifest need not read a
/// multi-gigabyte file back. (Durability is the staged folder's: its commit syncs every file.)
#[derive(Debug)]
pub struct HashedFile {
    w: BufWriter<std::fs::File>,
    hasher: Sha256,
    bytes: u64,
    path: PathBuf,
}

impl HashedFile {
    pub fn create(path: &Path) -> Result<Self, ExportError> {
        let f = std::fs::File::create(path).map_err(io(path))?;
        Ok(Self {
            w: BufWriter::with_capacity(1 << 20, f),
            hasher: Sha256::new(),
            bytes: 0,
            path: path.to_path_buf(),
        })
    }

    /// Flushes the file; its hash.
    pub fn finish(mut self) -> Result<FileHash, ExportError> {
        self.w.flush().map_err(io(&self.path))?;
        Ok(FileHash {
            sha256: hex::encode(self.hasher.finalize()),
            bytes: self.bytes,
            path: self.path,
        })
    }
}

impl Write for HashedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.w.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// The sha256 and size of a file, read as a stream.
pub fn hash_file(path: &Path) -> Result<(String, u64), ExportError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).map_err(io(path))?;
    Ok((hex::encode(h.finalize()), n))
}

/// Every regular file under `dir` but the manifest, sorted, with its size and sha256.
pub fn list_files(dir: &Path) -> Result<Vec<ExportedFile>, ExportError> {
    list_files_hashed(dir, &[])
}

/// [`list_files`], taking the hashes of the files in `known` (those still of that size) as
/// computed while writing them.
pub fn list_files_hashed(dir: &Path, known: &[FileHash]) -> Result<Vec<ExportedFile>, ExportError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let e = e.map_err(io(&d))?;
            let p = e.path();
            let ty = e.file_type().map_err(io(&p))?;
            if ty.is_dir() {
                stack.push(p);
            } else if ty.is_file() {
                let rel = p
                    .strip_prefix(dir)
                    .unwrap_or(&p)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                if rel == MANIFEST {
                    continue;
                }
                let size = e.metadata().map_err(io(&p))?.len();
                let (sha256, bytes) = match known.iter().find(|k| k.path == p && k.bytes == size) {
                    Some(k) => (k.sha256.clone(), k.bytes),
                    None => hash_file(&p)?,
                };
                out.push(ExportedFile {
                    path: rel,
                    bytes,
                    sha256,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Writes `manifest.json` for the files in `dir`; returns it.
pub(crate) fn write(
    dir: &Path,
    req: &ExportRequest,
    src: &Source,
    warnings: &[String],
    fallbacks: &[Fallback],
    hashed: &[FileHash],
) -> Result<Manifest, ExportError> {
    let gguf = matches!(
        req.options.format,
        crate::Format::Gguf | crate::Format::Ollama | crate::Format::GgufLora
    );
    let m = Manifest {
        schema: 1,
        created_at: doctune_core::now_rfc3339(),
        doctune_version: env!("CARGO_PKG_VERSION").into(),
        format: req.options.format,
        quant: gguf.then_some(req.options.quant),
        dtype: (req.options.format == crate::Format::Merged).then_some(req.options.dtype),
        run_id: src.run.id.clone(),
        step: src.step,
        base_model: src.base_name(req.base_name.as_deref()),
        warnings: warnings.to_vec(),
        fallbacks: fallbacks.to_vec(),
        files: list_files_hashed(dir, hashed)?,
    };
    let p = dir.join(MANIFEST);
    doctune_core::write_json_atomic(&p, &m).map_err(io(&p))?;
    Ok(m)
}
