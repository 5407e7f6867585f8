//! Adding documents to a project: the use case behind a drop on the window, the file dialog and
//! `doctune add`; and removing one again ([`remove_document`]).
//!
//! Each chosen path is a file or a folder. Folders are walked; every entry found below a chosen
//! folder must resolve (through symlinks) inside that folder — a link that points elsewhere is
//! refused, since the user chose the folder, not what it points to. Hidden entries (`.name`) in
//! folders are skipped and counted. Each file must be a regular, readable file within
//! [`Limits`]; it is streamed into `documents/` under a temporary name while its sha256 is
//! computed, then renamed into place — or discarded if the project already holds the same bytes
//! (reported as a duplicate). Originals are only ever read.

use crate::lock::{DirLock, InUse};
use crate::project_file::{self, DocumentEntry};
use crate::ApiError;
use doctune_core::units::human_bytes;
use doctune_core::{atomic, CancelToken, Code, JobEvent, ProgressSink, ProjectDir, Scope};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Limits on what one add may take. Defaults are documented in SECURITY.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Largest single document, in bytes (default 2 GiB).
    pub max_file_bytes: u64,
    /// Most files one add may take, counting folder contents (default 10,000).
    pub max_files: usize,
    /// Deepest folder nesting walked below a chosen folder (default 32).
    pub max_depth: usize,
    /// Free space that must remain on the project's disk after a copy (default 256 MiB).
    pub reserve_free_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 2 << 30,
            max_files: 10_000,
            max_depth: 32,
            reserve_free_bytes: 256 << 20,
        }
    }
}

/// A file that was already in the project (same sha256).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Duplicate {
    pub path: String,
    /// The name of the document that already holds these bytes.
    pub existing: String,
    /// Their sha256.
    pub sha256: String,
}

/// A path that could not be added, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddFailure {
    pub path: String,
    pub code: Code,
    pub message: String,
}

/// The outcome of one add.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddReport {
    pub added: Vec<DocumentEntry>,
    pub duplicates: Vec<Duplicate>,
    pub failed: Vec<AddFailure>,
    /// Hidden files and folders skipped inside chosen folders.
    pub skipped_hidden: usize,
    /// True when the user cancelled; what was added before that is kept.
    pub cancelled: bool,
}

/// A file to copy: the path to open, the scope it was found in (the chosen folder; none for a
/// file chosen itself), and the path to show (as the user gave it, or as found).
struct Candidate {
    open: PathBuf,
    scope: Option<Scope>,
    shown: String,
}

fn failure(path: &Path, code: Code, reason: impl std::fmt::Display) -> AddFailure {
    AddFailure {
        path: path.display().to_string(),
        code,
        message: format!("{}: {reason}", path.display()),
    }
}

fn kind_of(meta: &fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if meta.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// Adds `paths` to the project in `project_dir`. Per-path problems are reported in the
/// [`AddReport`]; only a problem with the project itself is an `Err`.
pub fn add_documents(
    project_dir: &Path,
    paths: &[PathBuf],
    limits: &Limits,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<AddReport, ApiError> {
    let project_scope = Scope::new(project_dir)?;
    let _in_use = InUse::shared(project_scope.root())?;
    let _lock = DirLock::acquire(project_scope.root())?;
    let mut file = project_file::read(project_scope.root())?;
    let docs_dir = project_scope.resolve(doctune_core::Area::Documents.dir_name())?;
    fs::create_dir_all(&docs_dir).map_err(|e| ApiError::io(&docs_dir, "cannot create", &e))?;

    let mut report = AddReport::default();
    let mut candidates = Vec::new();
    for p in paths {
        expand(p, limits, &mut candidates, &mut report)?;
    }

    let mut known: HashMap<String, String> = file
        .documents
        .iter()
        .map(|d| (d.sha256.clone(), d.name.clone()))
        .collect();
    let mut taken: HashSet<String> = file.documents.iter().map(|d| d.file.clone()).collect();
    let total = candidates.len() as u64;
    for (i, c) in candidates.iter().enumerate() {
        if cancel.is_cancelled() {
            report.cancelled = true;
            break;
        }
        sink.emit(JobEvent::progress(
            i as u64,
            total,
            "files",
            Some(c.shown.clone()),
        ));
        match copy_in(c, &docs_dir, limits, &known, &mut taken, cancel) {
            Ok(Copied::New(entry)) => {
                let entry = *entry;
                known.insert(entry.sha256.clone(), entry.name.clone());
                report.added.push(entry.clone());
                file.documents.push(entry);
            }
            Ok(Copied::Duplicate(existing, sha256)) => report.duplicates.push(Duplicate {
                path: c.shown.clone(),
                existing,
                sha256,
            }),
            Ok(Copied::Cancelled) => {
                report.cancelled = true;
                break;
            }
            Err(f) => report.failed.push(f),
        }
    }
    if !report.added.is_empty() {
        project_file::write(project_scope.root(), &file)?;
    }
    sink.emit(JobEvent::progress(total, total, "files", None));
    Ok(report)
}

/// Removes the document whose sha256 is `sha256` from the project in `project_dir`: its entry,
/// its copy in `documents/` and its extracted text. Datasets already built from it keep their
/// examples (they are snapshots). Refused while a job works in the project. Returns the entry.
pub fn remove_document(project_dir: &Path, sha256: &str) -> Result<DocumentEntry, ApiError> {
    let scope = Scope::new(project_dir)?;
    let _in_use = InUse::exclusive(scope.root(), "remove the document")?;
    let _lock = DirLock::acquire(scope.root())?;
    let mut file = project_file::read(scope.root())?;
    let at = file
        .documents
        .iter()
        .position(|d| d.sha256 == sha256)
        .ok_or_else(|| {
            ApiError::new(
                Code::NotFound,
                format!(
                    "{}: no document with sha256 {sha256}",
                    scope.root().display()
                ),
            )
        })?;
    let entry = file.documents.remove(at);
    // The entry goes first: a crash after this leaves an orphan file, never an entry without one.
    project_file::write(scope.root(), &file)?;
    let layout = ProjectDir::open(scope.root())?;
    for path in [layout.document(&entry.file)?, layout.extraction(sha256)?] {
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(ApiError::io(&path, "cannot remove", &e));
            }
        }
    }
    Ok(entry)
}

/// Turns one chosen path into candidates (walking folders), or failures.
fn expand(
    chosen: &Path,
    limits: &Limits,
    out: &mut Vec<Candidate>,
    report: &mut AddReport,
) -> Result<(), ApiError> {
    if let Err(e) = fs::symlink_metadata(chosen) {
        report.failed.push(if e.kind() == io::ErrorKind::NotFound {
            failure(chosen, Code::NotFound, "no such file or folder")
        } else {
            failure(chosen, Code::NotARegularFile, e)
        });
        return Ok(());
    }
    let meta = match fs::metadata(chosen) {
        Ok(m) => m,
        Err(e) => {
            report.failed.push(failure(
                chosen,
                Code::NotFound,
                format!("a link whose target cannot be read ({e})"),
            ));
            return Ok(());
        }
    };
    if meta.is_file() {
        // The file chosen itself (a link the user chose is followed once, here).
        let real = match chosen.canonicalize() {
            Ok(r) => r,
            Err(e) => {
                report.failed.push(failure(chosen, Code::NotFound, e));
                return Ok(());
            }
        };
        push(out, real, None, chosen, limits)?;
    } else if meta.is_dir() {
        let scope = match Scope::new(chosen) {
            Ok(s) => s,
            Err(e) => {
                report
                    .failed
                    .push(failure(chosen, Code::NotARegularFile, e));
                return Ok(());
            }
        };
        let mut visited = HashSet::new();
        walk(
            &scope,
            scope.root(),
            chosen,
            0,
            limits,
            &mut visited,
            out,
            report,
        )?;
    } else {
        report.failed.push(failure(
            chosen,
            Code::NotARegularFile,
            format!("{}, not a regular file", kind_of(&meta)),
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn walk(
    scope: &Scope,
    dir: &Path,
    shown_dir: &Path,
    depth: usize,
    limits: &Limits,
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<Candidate>,
    report: &mut AddReport,
) -> Result<(), ApiError> {
    if !visited.insert(dir.to_path_buf()) {
        return Ok(()); // a link back to a folder already walked
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            report.failed.push(failure(
                shown_dir,
                Code::NotARegularFile,
                format!("cannot list: {e}"),
            ));
            return Ok(());
        }
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let shown = shown_dir.join(&name);
        if name.to_string_lossy().starts_with('.') {
            report.skipped_hidden += 1;
            continue;
        }
        let resolved = match scope.resolve(entry.path()) {
            Ok(r) => r,
            Err(doctune_core::ScopeError::Escapes { resolved, .. }) => {
                report.failed.push(failure(
                    &shown,
                    Code::OutsideScope,
                    format!(
                        "a link to {}, outside the folder you chose; add that file itself if you mean it",
                        resolved.display()
                    ),
                ));
                continue;
            }
            Err(e) => {
                report.failed.push(failure(&shown, Code::NotFound, e));
                continue;
            }
        };
        let meta = match fs::metadata(&resolved) {
            Ok(m) => m,
            Err(e) => {
                report.failed.push(failure(&shown, Code::NotFound, e));
                continue;
            }
        };
        if meta.is_dir() {
            if depth + 1 > limits.max_depth {
                report.failed.push(failure(
                    &shown,
                    Code::InvalidInput,
                    format!(
                        "folders nested deeper than {} levels are not walked",
                        limits.max_depth
                    ),
                ));
                continue;
            }
            walk(
                scope,
                &resolved,
                &shown,
                depth + 1,
                limits,
                visited,
                out,
                report,
            )?;
        } else if meta.is_file() {
            push(out, resolved, Some(scope), &shown, limits)?;
        } else {
            report.failed.push(failure(
                &shown,
                Code::NotARegularFile,
                format!("{}, not a regular file", kind_of(&meta)),
            ));
        }
    }
    Ok(())
}

fn push(
    out: &mut Vec<Candidate>,
    open: PathBuf,
    scope: Option<&Scope>,
    shown: &Path,
    limits: &Limits,
) -> Result<(), ApiError> {
    if out.len() >= limits.max_files {
        return Err(ApiError::invalid(format!(
            "{}: more than {} files in one add; add fewer at a time",
            shown.display(),
            limits.max_files
        )));
    }
    out.push(Candidate {
        open,
        scope: scope.cloned(),
        shown: shown.display().to_string(),
    });
    Ok(())
}

enum Copied {
    New(Box<DocumentEntry>),
    Duplicate(String, String),
    Cancelled,
}

/// Opens a candidate for copying, checked on the open handle: never through a link in its last
/// component, never a FIFO or device (the open does not block), and for a file found in a chosen
/// folder, only while it is still the file inside that folder that the walk found — a file or
/// folder swapped for a link after the walk is refused, its target never read.
fn open_candidate(c: &Candidate) -> Result<File, AddFailure> {
    let shown = Path::new(&c.shown);
    let io_failure = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => failure(shown, Code::NotFound, "no such file"),
        io::ErrorKind::PermissionDenied => failure(
            shown,
            Code::NotARegularFile,
            "not readable (permission denied)",
        ),
        _ => failure(shown, Code::NotARegularFile, e),
    };
    match &c.scope {
        Some(scope) => scope.open(&c.open).map(|(f, _)| f).map_err(|e| match e {
            doctune_core::ScopeError::Io { source, .. } => io_failure(source),
            other => failure(
                shown,
                Code::OutsideScope,
                format!("{other}; nothing was copied"),
            ),
        }),
        None => doctune_core::open::open_regular(&c.open)
            .map(|(f, _)| f)
            .map_err(io_failure),
    }
}

/// A file name safe to create inside `documents/`: no separators, no control characters, no
/// leading dot, at most 200 bytes (cut at a character boundary, extension kept).
fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_string();
    let cleaned = if cleaned.is_empty() {
        "document".to_string()
    } else {
        cleaned
    };
    if cleaned.len() <= 200 {
        return cleaned;
    }
    let (stem, ext) = split_ext(&cleaned);
    let mut stem = stem.to_string();
    while stem.len() + ext.len() > 200 {
        stem.pop();
    }
    format!("{stem}{ext}")
}

fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= 10 => name.split_at(i),
        _ => (name, ""),
    }
}

fn copy_in(
    c: &Candidate,
    docs_dir: &Path,
    limits: &Limits,
    known: &HashMap<String, String>,
    taken: &mut HashSet<String>,
    cancel: &CancelToken,
) -> Result<Copied, AddFailure> {
    let shown = Path::new(&c.shown);
    let mut src = open_candidate(c)?;
    let size = src
        .metadata()
        .map_err(|e| failure(shown, Code::Internal, e))?
        .len();
    if size > limits.max_file_bytes {
        return Err(failure(
            shown,
            Code::InvalidInput,
            format!(
                "{} is larger than the {} limit for one document",
                human_bytes(size),
                human_bytes(limits.max_file_bytes)
            ),
        ));
    }
    if let Some(free) = doctune_gpu::free_disk_bytes(docs_dir) {
        if free < size.saturating_add(limits.reserve_free_bytes) {
            return Err(failure(
                shown,
                Code::NoSpace,
                format!(
                    "needs {} but the project's disk has {} free",
                    human_bytes(size),
                    human_bytes(free)
                ),
            ));
        }
    }

    let display_name = shown
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "document".into());
    let mut tmp = atomic::temp_beside(&docs_dir.join("x")).map_err(|e| {
        failure(
            docs_dir,
            Code::Internal,
            format!("cannot create a file: {e}"),
        )
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut copied: u64 = 0;
    loop {
        if cancel.is_cancelled() {
            return Ok(Copied::Cancelled); // tmp is dropped and removed
        }
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failure(shown, Code::Internal, format!("read failed: {e}"))),
        };
        copied += n as u64;
        if copied > limits.max_file_bytes {
            return Err(failure(
                shown,
                Code::InvalidInput,
                "grew past the size limit while being copied",
            ));
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(|e| {
            let code = if e.kind() == io::ErrorKind::StorageFull {
                Code::NoSpace
            } else {
                Code::Internal
            };
            failure(shown, code, format!("cannot write the copy: {e}"))
        })?;
    }
    let sha256 = hex::encode(hasher.finalize());
    if let Some(existing) = known.get(&sha256) {
        return Ok(Copied::Duplicate(existing.clone(), sha256));
    }
    // The temporary file has no extension: detect from its content with the original's as hint.
    let ext = Path::new(&display_name)
        .extension()
        .and_then(|e| e.to_str());
    let detection = tmp
        .reopen()
        .and_then(|f| doctune_ingest::detect_reader(f, ext))
        .map_err(|e| {
            failure(
                shown,
                Code::Internal,
                format!("cannot read the copy back: {e}"),
            )
        })?;

    let base = safe_name(&display_name);
    let (stem, ext) = split_ext(&base);
    let names = (1..=10_000u32)
        .map(|n| {
            if n == 1 {
                base.clone()
            } else {
                format!("{stem} ({n}){ext}")
            }
        })
        .filter(|n| !taken.contains(n));
    let file = atomic::commit_unique(tmp, docs_dir, names).map_err(|e| {
        let code = if e.kind() == io::ErrorKind::StorageFull {
            Code::NoSpace
        } else {
            Code::Internal
        };
        failure(shown, code, format!("cannot save the copy: {e}"))
    })?;
    taken.insert(file.clone());
    Ok(Copied::New(Box::new(DocumentEntry {
        name: display_name,
        file,
        size_bytes: copied,
        sha256,
        format: detection.format,
        warning: detection.mismatch.or_else(|| {
            (!detection.format.is_supported())
                .then(|| format!("{} files cannot be read by DocTune", detection.format))
        }),
        added_at: doctune_core::now_rfc3339(),
        source: c.shown.clone(),
        extraction: None,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names() {
        assert_eq!(safe_name("report.pdf"), "report.pdf");
        assert_eq!(safe_name(".bashrc"), "bashrc");
        assert_eq!(safe_name("a\u{1}b:c.txt"), "a_b_c.txt");
        assert_eq!(safe_name("..."), "document");
        let long = format!("{}.pdf", "é".repeat(150));
        let s = safe_name(&long);
        assert!(s.len() <= 200 && s.ends_with(".pdf"), "{s}");
    }
}
