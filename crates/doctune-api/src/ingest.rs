//! Extracting the text of a project's documents. Each document's [`doctune_ingest::Document`] is
//! cached in `extracted/<sha256>.json` (written atomically), so ingesting again is instant until
//! the extractor changes ([`doctune_ingest::EXTRACTOR_VERSION`]); each outcome is recorded in
//! `project.json`. Across the project, documents with the same text and paragraphs that repeat
//! in several documents are reported.

use crate::lock::{DirLock, InUse};
use crate::project_file;
pub use crate::project_file::{ExtractStatus, Extraction};
use crate::ApiError;
use doctune_core::{Area, CancelToken, Code, JobEvent, ProgressSink, ProjectDir, Scope};
use doctune_ingest::{Document, Format, EXTRACTOR_VERSION};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use doctune_ingest::Limits as IngestLimits;

/// One file's outcome, as `doctune ingest --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestRecord {
    /// The path as given (or the document's place in the project).
    pub path: String,
    pub sha256: String,
    pub status: ExtractStatus,
    pub format: Format,
    pub pages: u32,
    pub chars: usize,
    pub warnings: Vec<String>,
    pub error: Option<String>,
    /// True when the cached extraction was used.
    pub cached: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestReport {
    pub records: Vec<IngestRecord>,
    /// Groups of documents (names) whose extracted text is identical.
    pub duplicate_texts: Vec<Vec<String>>,
    /// Paragraphs (of 40 characters or more) that appear in more than one document.
    pub repeated_paragraphs: usize,
    pub cancelled: bool,
}

fn cache_path(scope: &Scope, sha256: &str) -> Result<PathBuf, ApiError> {
    Ok(ProjectDir::open(scope.root())?.extraction(sha256)?)
}

/// The cached extraction of a document, if it is current.
pub fn cached(project_dir: &Path, sha256: &str) -> Result<Option<Document>, ApiError> {
    let scope = Scope::new(project_dir)?;
    let p = cache_path(&scope, sha256)?;
    let Ok(bytes) = std::fs::read(&p) else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct Cached {
        extractor: u32,
        document: Document,
    }
    Ok(serde_json::from_slice::<Cached>(&bytes)
        .ok()
        .filter(|c| c.extractor == EXTRACTOR_VERSION)
        .map(|c| c.document))
}

fn summary(doc: &Document) -> Extraction {
    Extraction {
        status: if doc.warnings.is_empty() {
            ExtractStatus::Ok
        } else {
            ExtractStatus::OkWithWarnings
        },
        pages: doc.pages,
        chars: doc.text.chars().count(),
        records: doc.records.as_ref().map(Vec::len),
        title: doc.title.clone(),
        warnings: doc.warnings.clone(),
        error: None,
        extractor: EXTRACTOR_VERSION,
    }
}

/// Extracts the documents of the project in `project_dir` whose sha256 is in `only` (each with
/// the path to show for it), or, with `None`, every document not extracted by the current
/// extractor (or whose extraction failed). Per-file problems are records with status `error`; only a problem with the project
/// itself is an `Err`.
pub fn ingest(
    project_dir: &Path,
    only: Option<&[(String, String)]>,
    limits: &IngestLimits,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<IngestReport, ApiError> {
    let scope = Scope::new(project_dir)?;
    let _in_use = InUse::shared(scope.root())?;
    let file = project_file::read(scope.root())?;
    let todo: Vec<(String, String, String)> = file
        .documents
        .iter()
        .filter_map(|d| match only {
            Some(list) => list
                .iter()
                .find(|(sha, _)| *sha == d.sha256)
                .map(|(_, shown)| (d.sha256.clone(), d.file.clone(), shown.clone())),
            None => (d.extraction.as_ref().is_none_or(|e| {
                e.extractor != EXTRACTOR_VERSION || e.status == ExtractStatus::Error
            }))
            .then(|| {
                (
                    d.sha256.clone(),
                    d.file.clone(),
                    format!("{}/{}", Area::Documents.dir_name(), d.file),
                )
            }),
        })
        .collect();

    let mut report = IngestReport::default();
    let mut results: HashMap<String, Extraction> = HashMap::new();
    let total = todo.len() as u64;
    for (i, (sha, file_name, shown)) in todo.iter().enumerate() {
        if cancel.is_cancelled() {
            report.cancelled = true;
            break;
        }
        sink.emit(JobEvent::progress(
            i as u64,
            total,
            "files",
            Some(shown.clone()),
        ));
        let (extraction, format, cached_hit) = match cached(scope.root(), sha)? {
            Some(doc) => (summary(&doc), doc.format, true),
            None => {
                let error_record = |message: String, format: Format| {
                    let ex = Extraction {
                        status: ExtractStatus::Error,
                        pages: 0,
                        chars: 0,
                        records: None,
                        title: None,
                        warnings: Vec::new(),
                        error: Some(message),
                        extractor: EXTRACTOR_VERSION,
                    };
                    (ex, format, false)
                };
                match scope.resolve(Path::new(Area::Documents.dir_name()).join(file_name)) {
                    Err(e) => error_record(format!("{shown}: {e}"), Format::Unknown),
                    Ok(path) => match doctune_ingest::extract(
                        &path,
                        limits,
                        &doctune_core::NullSink,
                        cancel,
                    ) {
                        Ok(doc) => {
                            let cache = cache_path(&scope, sha)?;
                            write_cache(&cache, &doc)?;
                            (summary(&doc), doc.format, false)
                        }
                        Err(doctune_ingest::IngestError::Cancelled) => {
                            report.cancelled = true;
                            break;
                        }
                        Err(e) => {
                            let format = doctune_ingest::detect(&path)
                                .map(|d| d.format)
                                .unwrap_or(Format::Unknown);
                            // Name the file as the user knows it, not by its place in the project.
                            error_record(e.with_path(shown).to_string(), format)
                        }
                    },
                }
            }
        };
        report.records.push(IngestRecord {
            path: shown.clone(),
            sha256: sha.clone(),
            status: extraction.status,
            format,
            pages: extraction.pages,
            chars: extraction.chars,
            warnings: extraction.warnings.clone(),
            error: extraction.error.clone(),
            cached: cached_hit,
        });
        results.insert(sha.clone(), extraction);
    }
    sink.emit(JobEvent::progress(total, total, "files", None));

    // Record the outcomes; the project may have changed meanwhile, so re-read it under the lock.
    if !results.is_empty() {
        let _lock = DirLock::acquire(scope.root())?;
        let mut file = project_file::read(scope.root())?;
        for d in &mut file.documents {
            if let Some(e) = results.remove(&d.sha256) {
                d.extraction = Some(e);
            }
        }
        project_file::write(scope.root(), &file)?;
    }
    find_repeats(&scope, &mut report)?;
    Ok(report)
}

/// Duplicate texts and repeated paragraphs across every extracted document of the project.
fn find_repeats(scope: &Scope, report: &mut IngestReport) -> Result<(), ApiError> {
    let file = project_file::read(scope.root())?;
    let mut by_text: HashMap<[u8; 32], Vec<String>> = HashMap::new();
    let mut paragraphs: HashMap<[u8; 32], usize> = HashMap::new();
    for d in &file.documents {
        let Some(doc) = cached(scope.root(), &d.sha256)? else {
            continue;
        };
        if doc.text.is_empty() {
            continue;
        }
        by_text
            .entry(Sha256::digest(doc.text.as_bytes()).into())
            .or_default()
            .push(d.name.clone());
        let mut seen = std::collections::HashSet::new();
        for p in doc.text.split("\n\n").filter(|p| p.chars().count() >= 40) {
            let h: [u8; 32] = Sha256::digest(p.as_bytes()).into();
            if seen.insert(h) {
                *paragraphs.entry(h).or_default() += 1;
            }
        }
    }
    report.duplicate_texts = by_text.into_values().filter(|v| v.len() > 1).collect();
    report.duplicate_texts.sort();
    report.repeated_paragraphs = paragraphs.values().filter(|&&n| n > 1).count();
    Ok(())
}

/// The start of a document's extracted text, for the preview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub title: Option<String>,
    pub text: String,
    pub truncated: bool,
    pub warnings: Vec<String>,
}

pub fn preview(project_dir: &Path, sha256: &str, max_chars: usize) -> Result<Preview, ApiError> {
    let doc = cached(project_dir, sha256)?.ok_or_else(|| {
        ApiError::new(
            Code::NotFound,
            "this document has not been extracted yet; extract it first",
        )
    })?;
    let text: String = doc.text.chars().take(max_chars).collect();
    let truncated = text.len() < doc.text.len();
    let text = if doc.text.is_empty() {
        doc.records
            .map(|r| format!("{} records (kept as records for the dataset step)", r.len()))
            .unwrap_or_default()
    } else {
        text
    };
    Ok(Preview {
        title: doc.title,
        text,
        truncated,
        warnings: doc.warnings,
    })
}

/// What [`add_and_ingest`] did: the add, then the extraction of what it added.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddAndIngestReport {
    pub added: crate::AddReport,
    pub ingested: IngestReport,
}

/// Adds `paths` to the project (as [`crate::add_documents`] does) and extracts exactly the
/// documents they named — the new ones and those already in the project (duplicates), each
/// shown by the path it was given as.
pub fn add_and_ingest(
    project_dir: &Path,
    paths: &[PathBuf],
    add_limits: &crate::Limits,
    limits: &IngestLimits,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<AddAndIngestReport, ApiError> {
    let added = crate::add_documents(project_dir, paths, add_limits, sink, cancel)?;
    let only: Vec<(String, String)> = added
        .added
        .iter()
        .map(|d| (d.sha256.clone(), d.source.clone()))
        .chain(
            added
                .duplicates
                .iter()
                .map(|d| (d.sha256.clone(), d.path.clone())),
        )
        .collect();
    let ingested = ingest(project_dir, Some(&only), limits, sink, cancel)?;
    Ok(AddAndIngestReport { added, ingested })
}

/// Free space kept on the disk beyond a cache file, so extraction never fills it to the last byte.
const CACHE_RESERVE_BYTES: u64 = 16 << 20;

/// Writes a document's cache file atomically, after checking the disk has room for it (see
/// [`doctune_core::space`]): a full disk stops the extraction with `noSpace` and leaves the
/// cache and `project.json` as they were.
fn write_cache(cache: &Path, doc: &doctune_ingest::Document) -> Result<(), ApiError> {
    let mut bytes = serde_json::to_vec_pretty(
        &serde_json::json!({"extractor": EXTRACTOR_VERSION, "document": doc}),
    )
    .map_err(|e| ApiError::new(Code::Internal, e.to_string()))?;
    bytes.push(b'\n');
    let dir = cache.parent().unwrap_or(cache);
    doctune_core::space::ensure_room(
        dir,
        bytes.len() as u64 + CACHE_RESERVE_BYTES,
        "the text cache",
    )
    .and_then(|()| doctune_core::write_atomic(cache, &bytes))
    .map_err(|e| ApiError::io(cache, "cannot write", &e))
}
