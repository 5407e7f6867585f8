//! Exports of a project's runs (`doctune-export` does the writing): by default into the
//! project's `exports/<id>/`, with the base model named as the library knows it (its Hub repo
//! id when it was pulled), the free disk checked first; and the list of a project's exports,
//! read from their manifests.

use crate::{models, ApiError, Home};
use doctune_core::{Area, CancelToken, ProgressSink, ProjectDir};
pub use doctune_export::{Dtype, ExportOptions, ExportReport, ExportedFile, Format, Quant};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The project a run belongs to (a run folder is `<project>/runs/<id>`).
fn project_of(run_dir: &Path) -> Option<PathBuf> {
    let runs = run_dir.parent()?;
    let project = runs.parent()?;
    (runs.file_name()? == Area::Runs.dir_name() && ProjectDir::is_project(project))
        .then(|| project.to_path_buf())
}

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
    let out = match out {
        Some(o) => o,
        None => {
            let project = project_of(run_dir).ok_or_else(|| {
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
