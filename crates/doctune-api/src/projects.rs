//! Projects: a folder each, under [`Home::projects_dir`](crate::Home::projects_dir), described by
//! `project.json` (always written atomically). Layout:
//!
//! ```text
//! <project>/project.json   name, creation time, the document list
//! <project>/documents/     originals, copied in, never modified
//! <project>/extracted/     text extracted from documents (ingestion)
//! <project>/datasets/      built training sets
//! <project>/runs/          training runs
//! <project>/exports/       exported models
//! ```
//!
//! The app names a project by its id (the folder name); the id is resolved through a
//! [`Scope`] on the projects folder, so no id can name a folder elsewhere.

use crate::{ApiError, Home};
use doctune_core::{write_json_atomic, Code, Scope};
use doctune_ingest::Format;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

pub const PROJECT_FILE: &str = "project.json";
pub const SCHEMA_VERSION: u32 = 1;
/// The sub-folders every project has.
pub const SUBDIRS: [&str; 5] = ["documents", "extracted", "datasets", "runs", "exports"];
/// Longest project name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
const LOCK_FILE: &str = ".lock";

/// One document of a project, as `project.json` stores it and the Documents list shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentEntry {
    /// The file's name as the user had it.
    pub name: String,
    /// Where the copy lives, relative to the project's `documents/`.
    pub file: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub format: Format,
    /// Set when the extension and the content disagree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// RFC 3339 time of adding.
    pub added_at: String,
    /// The path it was added from.
    pub source: String,
    /// The outcome of text extraction, once it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extraction: Option<crate::ingest::Extraction>,
}

/// What `project.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProjectFile {
    pub schema: u32,
    pub name: String,
    pub created_at: String,
    #[serde(default)]
    pub documents: Vec<DocumentEntry>,
}

/// A project in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSummary {
    /// The folder name; what the app passes back to name this project.
    pub id: String,
    pub name: String,
    pub path: String,
    pub created_at: String,
    pub document_count: usize,
}

/// A project with its documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    #[serde(flatten)]
    pub summary: ProjectSummary,
    pub documents: Vec<DocumentEntry>,
}

/// `{prefix}-{YYYYMMDDhhmmss}`, with `-2`, `-3`, … added until no such entry is in `dir`.
pub(crate) fn stamped_id(dir: &Path, prefix: &str) -> String {
    let stamp: String = now_rfc3339()
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(14)
        .collect();
    let base = format!("{prefix}-{stamp}");
    let mut id = base.clone();
    let mut n = 2;
    while dir.join(&id).exists() {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn validate_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::invalid("a project needs a name"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(format!(
            "project name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "project name contains control characters",
        ));
    }
    Ok(name.to_owned())
}

/// A folder name made from a project name: lowercase ASCII letters, digits and dashes.
pub(crate) fn slug(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s: String = s.trim_matches('-').chars().take(48).collect();
    let s = s.trim_end_matches('-');
    if s.is_empty() {
        "project".into()
    } else {
        s.into()
    }
}

/// Creates a project called `name` under `home`.
pub fn create(home: &Home, name: &str) -> Result<ProjectSummary, ApiError> {
    let name = validate_name(name)?;
    let dir = home.projects_dir();
    fs::create_dir_all(&dir).map_err(|e| ApiError::io(&dir, "cannot create", &e))?;
    if list(home)?
        .iter()
        .any(|p| p.name.to_lowercase() == name.to_lowercase())
    {
        return Err(ApiError::new(
            Code::AlreadyExists,
            format!("a project called \"{name}\" already exists"),
        ));
    }
    let base = slug(&name);
    let mut n = 1;
    let project_dir = loop {
        let candidate = if n == 1 {
            dir.join(&base)
        } else {
            dir.join(format!("{base}-{n}"))
        };
        // create_dir (not _all) fails if it exists: no two creators get the same folder.
        match fs::create_dir(&candidate) {
            Ok(()) => break candidate,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(ApiError::io(&candidate, "cannot create", &e)),
        }
    };
    for sub in SUBDIRS {
        let p = project_dir.join(sub);
        fs::create_dir_all(&p).map_err(|e| ApiError::io(&p, "cannot create", &e))?;
    }
    let file = ProjectFile {
        schema: SCHEMA_VERSION,
        name,
        created_at: now_rfc3339(),
        documents: Vec::new(),
    };
    let pf = project_dir.join(PROJECT_FILE);
    write_json_atomic(&pf, &file).map_err(|e| ApiError::io(&pf, "cannot write", &e))?;
    Ok(summary(&project_dir, &file))
}

/// Every project under `home`, newest first. Folders without a readable `project.json` are
/// skipped (they are not projects) and logged.
pub fn list(home: &Home) -> Result<Vec<ProjectSummary>, ApiError> {
    let dir = home.projects_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ApiError::io(&dir, "cannot list", &e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        match read_file(&path) {
            Ok(f) => out.push(summary(&path, &f)),
            Err(e) => tracing::warn!("skipping {}: {}", path.display(), e),
        }
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// The folder of the project with id `id` under `home`; the id cannot name anything outside.
pub fn dir_of(home: &Home, id: &str) -> Result<PathBuf, ApiError> {
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        return Err(ApiError::invalid(format!("\"{id}\" is not a project id")));
    }
    let projects = home.projects_dir();
    let scope = Scope::new(&projects).map_err(|_| {
        ApiError::new(
            Code::NotFound,
            format!("no project \"{id}\": there are no projects yet"),
        )
    })?;
    let dir = scope.resolve(id)?;
    if !dir.join(PROJECT_FILE).is_file() {
        return Err(ApiError::new(
            Code::NotFound,
            format!("no project \"{id}\""),
        ));
    }
    Ok(dir)
}

/// Finds a project from what a user typed: a project folder path, or the id or name of a
/// project under `home`.
pub fn locate(home: &Home, dir_or_name: &str) -> Result<PathBuf, ApiError> {
    let as_path = Path::new(dir_or_name);
    if as_path.join(PROJECT_FILE).is_file() {
        return Ok(as_path.to_path_buf());
    }
    if as_path.is_dir() {
        return Err(ApiError::new(
            Code::NotFound,
            format!("{dir_or_name}: not a DocTune project (no {PROJECT_FILE})"),
        ));
    }
    if let Ok(dir) = dir_of(home, dir_or_name) {
        return Ok(dir);
    }
    list(home)?
        .into_iter()
        .find(|p| p.name == dir_or_name)
        .map(|p| PathBuf::from(p.path))
        .ok_or_else(|| {
            ApiError::new(
                Code::NotFound,
                format!("{dir_or_name}: no such project folder or project name"),
            )
        })
}

/// Opens the project in `dir`.
pub fn open(dir: &Path) -> Result<Project, ApiError> {
    let file = read_file(dir)?;
    Ok(Project {
        summary: summary(dir, &file),
        documents: file.documents,
    })
}

pub(crate) fn read_file(dir: &Path) -> Result<ProjectFile, ApiError> {
    let path = dir.join(PROJECT_FILE);
    let bytes = fs::read(&path).map_err(|e| ApiError::io(&path, "cannot read", &e))?;
    let file: ProjectFile = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            Code::Internal,
            format!("{}: not a valid project file: {e}", path.display()),
        )
    })?;
    if file.schema > SCHEMA_VERSION {
        return Err(ApiError::new(
            Code::Internal,
            format!(
                "{}: written by a newer DocTune (schema {}); update DocTune to open it",
                path.display(),
                file.schema
            ),
        ));
    }
    Ok(file)
}

pub(crate) fn write_file(dir: &Path, file: &ProjectFile) -> Result<(), ApiError> {
    let path = dir.join(PROJECT_FILE);
    write_json_atomic(&path, file).map_err(|e| ApiError::io(&path, "cannot write", &e))
}

fn summary(dir: &Path, file: &ProjectFile) -> ProjectSummary {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    ProjectSummary {
        id: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        name: file.name.clone(),
        path: dir.to_string_lossy().into_owned(),
        created_at: file.created_at.clone(),
        document_count: file.documents.len(),
    }
}

/// An exclusive lock on a folder (a project, or DocTune's home for the model library), held
/// while a JSON file in it is read, changed and written, so that the app and the CLI cannot
/// lose each other's changes. Released on drop.
#[derive(Debug)]
pub(crate) struct DirLock(fs::File);

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<Self, ApiError> {
        let path = dir.join(LOCK_FILE);
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ApiError::io(&path, "cannot open lock file", &e))?;
        f.lock()
            .map_err(|e| ApiError::io(&path, "cannot lock the project", &e))?;
        Ok(Self(f))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slug("My Thesis (draft)"), "my-thesis-draft");
        assert_eq!(slug("!!!"), "project");
        assert_eq!(slug("Ünïcode name"), "n-code-name");
        assert_eq!(slug(&"a".repeat(80)).len(), 48);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("  ").is_err());
        assert!(validate_name("a\u{7}b").is_err());
        assert!(validate_name(&"x".repeat(101)).is_err());
        assert_eq!(validate_name("  ok ").unwrap(), "ok");
    }
}
