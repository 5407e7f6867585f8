//! `project.json`, owned here: its types ([`ProjectFile`], [`DocumentEntry`], and the
//! [`Extraction`] outcome ingestion records per document) and its reading and (atomic)
//! writing. The use cases that change it ([`crate::documents`], [`crate::ingest`]) hold the
//! project's lock while they read, change and write it.

use crate::ApiError;
use doctune_core::{write_json_atomic, Code, ProjectDir};
use doctune_ingest::Format;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `project.json`'s schema version.
pub const SCHEMA_VERSION: u32 = 1;

/// How extraction of one document ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExtractStatus {
    Ok,
    OkWithWarnings,
    Error,
}

/// What `project.json` records of a document's extraction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Extraction {
    pub status: ExtractStatus,
    pub pages: u32,
    pub chars: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub extractor: u32,
}

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
    pub extraction: Option<Extraction>,
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

pub(crate) fn read(dir: &Path) -> Result<ProjectFile, ApiError> {
    let path = dir.join(ProjectDir::FILE);
    let bytes = std::fs::read(&path).map_err(|e| ApiError::io(&path, "cannot read", &e))?;
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

pub(crate) fn write(dir: &Path, file: &ProjectFile) -> Result<(), ApiError> {
    let path = dir.join(ProjectDir::FILE);
    write_json_atomic(&path, file).map_err(|e| ApiError::io(&path, "cannot write", &e))
}
