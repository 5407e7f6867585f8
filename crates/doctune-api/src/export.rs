//! Exports of a project's runs (`doctune-export` does the writing): by default into the
//! project's `exports/<id>/`, with the base model named as the library knows it (its Hub repo
//! id when it was pulled), the free disk checked first; and the list of a project's exports,
//! read from their manifests.

use crate::lock::InUse;
use crate::{models, ApiError, Home};
use doctune_core::{Area, CancelToken, ProgressSink, ProjectDir};
pub use doctune_export::{Dtype, ExportOptions, ExportReport, ExportedFile, Format, Quant};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The base model's name as the library knows it: the Hub repo id of a pulled model, else the
/// entry's name; `None` for a folder the library does not have.
fn library_name(home: &Home, base: &Path) -> Option<String> {
    let base = base.canonicalize().ok()?;
    models::list(home).ok()?.into_iter().find_map(|m| {
        if Path::new(&m.path).canonicalize().ok()? != base {
            return None;
        }
        Some(match m.source {
            models::ModelSource::Hub { repo, .. } => repo,
            models::ModelSource::Local { .. } | models::ModelSource::Scratch { .. } => m.name,
        })
    })
}

/// Exports the run in `run_dir` to `out`, or (`None`) to a new `exports/<id>/` of the run's
/// project.
pub fn export(
    home: &Home,
    run_dir: &Path,
    options: &ExportOptions,
    out: Option<PathBuf>,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<ExportReport, ApiError> {
    let project = ProjectDir::containing(run_dir, Area::Runs);
    let _in_use = project.as_deref().map(InUse::shared).transpose()?;
    let out = match out {
        Some(o) => o,
        None => {
            let project = project.ok_or_else(|| {
                ApiError::invalid(format!(
                    "{}: not a run of a DocTune project; say where to export it (--out DIR)",
                    run_dir.display()
                ))
            })?;
            let exports = ProjectDir::open(&project)?.area(Area::Exports)?;
            std::fs::create_dir_all(&exports)
                .map_err(|e| ApiError::io(&exports, "cannot create", &e))?;
            exports.join(doctune_core::stamped_id(&exports, "export"))
        }
    };
    let run = doctune_train::RunDir::at(run_dir).read()?;
    let req = doctune_export::ExportRequest {
        run_dir: run_dir.to_path_buf(),
        out,
        base_name: library_name(home, &run.config.base_model),
        options: options.clone(),
    };
    Ok(doctune_export::export(
        &req,
        &doctune_gpu::free_disk_bytes,
        sink,
        cancel,
    )?)
}

/// A format as the Export view offers it: its label, the GGUF types it takes (the first is the
/// default) and the weight dtypes of a merged model. Rust's rules, so the UI holds none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FormatInfo {
    pub format: Format,
    pub label: &'static str,
    pub quants: Vec<Quant>,
    pub dtypes: Vec<Dtype>,
}

/// Every export format, in the order to offer them.
pub fn formats() -> Vec<FormatInfo> {
    Format::ALL
        .iter()
        .map(|&format| FormatInfo {
            format,
            label: format.label(),
            quants: format.quants().to_vec(),
            dtypes: if format == Format::Merged {
                vec![Dtype::Bf16, Dtype::F16, Dtype::F32]
            } else {
                Vec::new()
            },
        })
        .collect()
}

/// What an export will take before it starts: its expected size and the free space where it
/// would be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportEstimate {
    pub bytes: u64,
    /// Free bytes on the disk of the project's `exports/` (`None` when unknown).
    pub free_bytes: Option<u64>,
}

/// The expected size of exporting the run in `run_dir` with `options` (see [`ExportEstimate`]).
pub fn estimate(run_dir: &Path, options: &ExportOptions) -> Result<ExportEstimate, ApiError> {
    let bytes = doctune_export::estimate(run_dir, options)?;
    let at = ProjectDir::containing(run_dir, Area::Runs)
        .and_then(|p| ProjectDir::open(&p).ok()?.area(Area::Exports).ok())
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| run_dir.to_path_buf());
    Ok(ExportEstimate {
        bytes,
        free_bytes: doctune_gpu::free_disk_bytes(&at),
    })
}

/// An export as lists show it (from its `manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportInfo {
    pub id: String,
    pub path: String,
    pub format: Format,
    pub quant: Option<Quant>,
    pub run_id: String,
    pub step: u64,
    pub created_at: String,
    pub files: Vec<ExportedFile>,
    pub total_bytes: u64,
}

/// The exports of a project, newest first (folders without a readable manifest are skipped).
pub fn list(project_dir: &Path) -> Result<Vec<ExportInfo>, ApiError> {
    let dir = ProjectDir::open(project_dir)?.area(Area::Exports)?;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        if id.starts_with('.') {
            continue;
        }
        let m = match doctune_export::manifest::read(&e.path()) {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!("skipping {}: {err}", e.path().display());
                continue;
            }
        };
        out.push(ExportInfo {
            id,
            path: e.path().display().to_string(),
            format: m.format,
            quant: m.quant,
            run_id: m.run_id,
            step: m.step,
            created_at: m.created_at,
            total_bytes: m.files.iter().map(|f| f.bytes).sum(),
            files: m.files,
        });
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(out)
}
