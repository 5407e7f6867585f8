//! `manifest.json`: what an export is (format, quantisation, the run and checkpoint it came
//! from, the base model) and every file it wrote with its size and sha256, so a user can verify
//! a copy; and the file list the report and the Export view show.

use crate::source::Source;
use crate::{io, ExportError, ExportRequest, Fallback};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::Path;

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
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// The sha256 and size of a file, read as a stream.
pub fn hash_file(path: &Path) -> Result<(String, u64), ExportError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).map_err(io(path))?;
    Ok((hex::encode(h.finalize()), n))
}

/// Every regular file under `dir` but the manifest, sorted, with its size and sha256.
pub fn list_files(dir: &Path) -> Result<Vec<ExportedFile>, ExportError> {
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
                let (sha256, bytes) = hash_file(&p)?;
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
) -> Result<Manifest, ExportError> {
    let gguf = matches!(
        req.format,
        crate::Format::Gguf | crate::Format::Ollama | crate::Format::GgufLora
    );
    let m = Manifest {
        schema: 1,
        created_at: doctune_core::now_rfc3339(),
        doctune_version: env!("CARGO_PKG_VERSION").into(),
        format: req.format,
        quant: gguf.then_some(req.quant),
        dtype: (req.format == crate::Format::Merged).then_some(req.dtype),
        run_id: src.run.id.clone(),
        step: src.step,
        base_model: src.base_name(req.base_name.as_deref()),
        warnings: warnings.to_vec(),
        fallbacks: fallbacks.to_vec(),
        files: list_files(dir)?,
    };
    let p = dir.join(MANIFEST);
    doctune_core::write_json_atomic(&p, &m).map_err(io(&p))?;
    Ok(m)
}
