//! Datasets of a project: build one (from the project's extracted documents for continued
//! pretraining, or from instruction files), list them, preview what the model will see.
//!
//! Datasets live in the project's `datasets/<id>/` (see `doctune-dataset` for the files). The
//! app names instruction files by the sha256 of a project document (resolved through the
//! project's `Scope`) and models by library id; the CLI may name any file and folder.

use crate::lock::InUse;
use crate::models::resolve_model;
use crate::qa::Extracted;
use crate::{ingest, projects, ApiError, DocumentEntry, Home};
use doctune_core::{Area, CancelToken, Code, ProgressSink, ProjectDir};
pub use doctune_dataset::pairs::PairFormat;
pub use doctune_dataset::qa::QaReport;
pub use doctune_dataset::{BuildOptions, Generator, LossOn, Mode, OnBadRow, QaOptions};
use doctune_dataset::{DatasetDir, DatasetMeta, Inputs, TextSource};
use doctune_tokenizer::ModelTokenizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What to build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetRequest {
    /// A library model id or a model folder (its tokenizer and chat template are used).
    pub model: String,
    /// Instruction files (instruct mode).
    #[serde(default)]
    pub inputs: Vec<PathBuf>,
    #[serde(default)]
    pub options: BuildOptions,
}

/// What the app's UI asks for: a library model by id and instruction files by the sha256 of a
/// project document — never a path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppDatasetRequest {
    pub model: String,
    #[serde(default)]
    pub documents: Vec<String>,
    #[serde(default)]
    pub options: BuildOptions,
}

impl AppDatasetRequest {
    /// The request with the model checked against the library and the documents resolved
    /// through the project's `Scope`.
    pub fn resolve(&self, home: &Home, project_dir: &Path) -> Result<DatasetRequest, ApiError> {
        crate::models::require_in_library(home, &self.model)?;
        if let Generator::Model { model } = &self.options.qa.generator {
            crate::models::require_in_library(home, model)?;
        }
        Ok(DatasetRequest {
            model: self.model.clone(),
            inputs: document_paths(project_dir, &self.documents)?,
            options: self.options.clone(),
        })
    }
}

/// A dataset as lists show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetSummary {
    pub id: String,
    pub path: String,
    pub meta: DatasetMeta,
}

/// One example of a preview: the exact text the model sees and the parts it is trained on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewExample {
    pub text: String,
    /// Trained-on spans, as character (Unicode scalar) offsets into `text`.
    pub spans: Vec<(usize, usize)>,
    pub tokens: usize,
    pub trained_tokens: usize,
    /// Question–answer datasets: the passage the pair came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<PreviewSource>,
}

/// Where a question–answer example came from: its document, section, the passage's character
/// span in the document's extracted text, and the passage itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewSource {
    pub document: String,
    pub section: Option<String>,
    pub start: usize,
    pub end: usize,
    pub passage: String,
    /// `generator`, `definition` or `heading`.
    pub origin: doctune_dataset::qa::PairOrigin,
    pub support: f64,
}

/// A new dataset id: the mode and the time, unique in the folder.
fn new_id(datasets: &Path, mode: Mode) -> String {
    let prefix = match mode {
        Mode::Pretrain => "pretrain",
        Mode::Instruct => "instruct",
        Mode::Qa => "qa",
    };
    doctune_core::stamped_id(datasets, prefix)
}

/// The project's extracted prose documents (those with a current extraction; JSON/JSONL data
/// files are instruction data, not prose) as `(name, sha256, document)`, and how many are not
/// extracted yet.
fn extracted(project_dir: &Path) -> Result<(Vec<Extracted>, usize), ApiError> {
    let project = projects::open(project_dir)?;
    let mut out = Vec::new();
    let mut missing = 0;
    for d in &project.documents {
        match ingest::cached(project_dir, &d.sha256)? {
            Some(doc) if doc.records.is_none() => out.push((d.name.clone(), d.sha256.clone(), doc)),
            Some(_) => {}
            None => missing += 1,
        }
    }
    Ok((out, missing))
}

/// The project's extracted documents for `purpose` ("train on"): an error naming the project
/// when there is none, a warning when some are not extracted yet.
pub(crate) fn extracted_documents(
    project_dir: &Path,
    purpose: &str,
    sink: &dyn ProgressSink,
) -> Result<Vec<TextSource>, ApiError> {
    Ok(extracted_with_sections(project_dir, purpose, sink)?
        .into_iter()
        .map(|(name, sha256, doc)| TextSource {
            name,
            sha256,
            text: doc.text,
        })
        .collect())
}

/// [`extracted_documents`] with their sections (headings, chapters, pages).
pub(crate) fn extracted_with_sections(
    project_dir: &Path,
    purpose: &str,
    sink: &dyn ProgressSink,
) -> Result<Vec<Extracted>, ApiError> {
    let (docs, missing) = extracted(project_dir)?;
    if docs.is_empty() {
        return Err(ApiError::invalid(format!(
            "{}: no extracted document to {purpose}{} — add and extract documents first",
            project_dir.display(),
            if missing > 0 {
                format!(" ({missing} not extracted yet)")
            } else {
                String::new()
            }
        )));
    }
    if missing > 0 {
        sink.emit(doctune_core::JobEvent::Warning {
            message: format!("{missing} documents are not extracted yet and are left out"),
        });
    }
    Ok(docs)
}

/// The project's documents that an instruction dataset can be built from (the data formats
/// `doctune_ingest::Format::is_instruction_data` names), in the project's order.
pub fn instruction_documents(project_dir: &Path) -> Result<Vec<DocumentEntry>, ApiError> {
    Ok(projects::open(project_dir)?
        .documents
        .into_iter()
        .filter(|d| d.format.is_instruction_data())
        .collect())
}

/// The project copies of documents named by sha256 (the app's way to name instruction files).
pub fn document_paths(project_dir: &Path, shas: &[String]) -> Result<Vec<PathBuf>, ApiError> {
    let project = projects::open(project_dir)?;
    let layout = ProjectDir::open(project_dir)?;
    shas.iter()
        .map(|sha| {
            let d = project
                .documents
                .iter()
                .find(|d| &d.sha256 == sha)
                .ok_or_else(|| {
                    ApiError::new(Code::NotFound, format!("no document {sha} in the project"))
                })?;
            Ok(layout
                .scope()
                .resolve(Path::new(Area::Documents.dir_name()).join(&d.file))?)
        })
        .collect()
}

/// Builds a dataset in the project in `project_dir`.
pub fn build(
    home: &Home,
    project_dir: &Path,
    req: &DatasetRequest,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<DatasetSummary, ApiError> {
    let model_dir = resolve_model(home, &req.model)?;
    let _in_use = InUse::shared(project_dir)?;
    let tok = ModelTokenizer::load(&model_dir)?;
    let datasets = ProjectDir::open(project_dir)?.area(Area::Datasets)?;
    let inputs = match req.options.mode {
        Mode::Pretrain => {
            let docs = extracted_documents(project_dir, "train on", sink)?;
            Inputs::Documents(docs)
        }
        Mode::Instruct => {
            if req.inputs.is_empty() {
                return Err(ApiError::invalid(
                    "instruction mode needs at least one instruction file (JSONL, JSON or CSV)",
                ));
            }
            Inputs::Files(req.inputs.clone())
        }
        Mode::Qa => {
            let docs = extracted_with_sections(project_dir, "make questions from", sink)?;
            Inputs::Pairs(Box::new(crate::qa::make_pairs(
                home,
                docs,
                &datasets,
                &req.options.qa,
                &tok,
                sink,
                cancel,
            )?))
        }
    };
    let id = new_id(&datasets, req.options.mode);
    let report = doctune_dataset::build(
        &datasets,
        &id,
        &model_dir,
        &tok,
        &inputs,
        &req.options,
        sink,
        cancel,
    )?;
    Ok(DatasetSummary {
        id,
        path: report.dir.display().to_string(),
        meta: report.meta,
    })
}

/// The datasets of a project, newest first.
pub fn list(project_dir: &Path) -> Result<Vec<DatasetSummary>, ApiError> {
    let dir = ProjectDir::open(project_dir)?.area(Area::Datasets)?;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.path().is_dir() {
            continue;
        }
        if let Ok(meta) = DatasetDir::at(e.path()).read_meta() {
            out.push(DatasetSummary {
                id: name,
                path: e.path().display().to_string(),
                meta,
            });
        }
    }
    out.sort_by(|a, b| {
        b.meta
            .created_at
            .cmp(&a.meta.created_at)
            .then(b.id.cmp(&a.id))
    });
    Ok(out)
}

/// The folder of dataset `id` of a project (confined to its `datasets/`).
pub fn dir_of(project_dir: &Path, id: &str) -> Result<PathBuf, ApiError> {
    let p = ProjectDir::open(project_dir)?.item(Area::Datasets, id)?;
    if !DatasetDir::is_dataset(&p) {
        return Err(ApiError::new(
            Code::NotFound,
            format!("no dataset `{id}` in {}", project_dir.display()),
        ));
    }
    Ok(p)
}

/// The first `n` training examples of the dataset in `dir` (question–answer datasets: each with
/// the passage it came from).
pub fn preview(dir: &Path, n: usize) -> Result<Vec<PreviewExample>, ApiError> {
    let records = doctune_dataset::preview(dir, n.min(1000))?;
    let (pairs, passages) = if records.iter().any(|r| r.source.is_some()) {
        let ds = DatasetDir::open(dir)?;
        (ds.read_pairs()?, ds.read_passages()?)
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(records
        .into_iter()
        .map(|r| PreviewExample {
            tokens: r.ids.len(),
            trained_tokens: r.mask.iter().filter(|&&m| m == 1).count(),
            source: r.source.and_then(|s| {
                let pair = pairs.get(s.pair)?;
                let passage = passages.get(s.passage)?;
                Some(PreviewSource {
                    document: pair.document.clone(),
                    section: pair.section.clone(),
                    start: pair.start,
                    end: pair.end,
                    passage: passage.text.clone(),
                    origin: pair.origin,
                    support: pair.support,
                })
            }),
            text: r.text,
            spans: r.spans,
        })
        .collect())
}

/// Writes the pairs of the question–answer dataset in `dir` to `out` as JSONL (alpaca or OpenAI
/// messages, each row with its `source`) and returns how many; build the edited file again with
/// the instruction mode.
pub fn export_pairs(dir: &Path, format: PairFormat, out: &Path) -> Result<usize, ApiError> {
    Ok(doctune_dataset::pairs::export_pairs(dir, format, out)?)
}
