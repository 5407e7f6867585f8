//! Projects: a folder each, under [`Home::projects_dir`](crate::Home::projects_dir), laid out as
//! [`ProjectDir`] says and described by `project.json` ([`crate::project_file`]). Create, list,
//! find, open, rename and delete them (to the OS trash where there is one).
//!
//! The app names a project by its id (the folder name); the id is resolved through a
//! [`Scope`] on the projects folder, so no id can name a folder elsewhere.

use crate::lock::{DirLock, InUse};
use crate::project_file::{self, DocumentEntry, ProjectFile, SCHEMA_VERSION};
use crate::{ApiError, Home};
use doctune_core::{now_rfc3339, Area, Code, ProjectDir, Scope};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// Longest project name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

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

/// Refuses `name` when another project under `home` (not `except`, an id) has it.
fn check_unique(home: &Home, name: &str, except: Option<&str>) -> Result<(), ApiError> {
    if list(home)?
        .iter()
        .any(|p| Some(p.id.as_str()) != except && p.name.to_lowercase() == name.to_lowercase())
    {
        return Err(ApiError::new(
            Code::AlreadyExists,
            format!("a project called \"{name}\" already exists"),
        ));
    }
    Ok(())
}

/// Creates a project called `name` under `home`.
pub fn create(home: &Home, name: &str) -> Result<ProjectSummary, ApiError> {
    let name = validate_name(name)?;
    let dir = home.projects_dir();
    fs::create_dir_all(&dir).map_err(|e| ApiError::io(&dir, "cannot create", &e))?;
    check_unique(home, &name, None)?;
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
    let layout = ProjectDir::open(&project_dir)?;
    layout
        .create_areas()
        .map_err(|e| ApiError::io(&project_dir, "cannot create", &e))?;
    let file = ProjectFile {
        schema: SCHEMA_VERSION,
        name,
        created_at: now_rfc3339(),
        documents: Vec::new(),
    };
    project_file::write(&project_dir, &file)?;
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
        match project_file::read(&path) {
            Ok(f) => out.push(summary(&path, &f)),
            Err(e) => tracing::warn!("skipping {}: {}", path.display(), e),
        }
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// The folder of the project with id `id` under `home`; the id cannot name anything outside.
pub fn dir_of(home: &Home, id: &str) -> Result<PathBuf, ApiError> {
    doctune_core::check_id("project", id)?;
    let projects = home.projects_dir();
    let scope = Scope::new(&projects).map_err(|_| {
        ApiError::new(
            Code::NotFound,
            format!("no project \"{id}\": there are no projects yet"),
        )
    })?;
    let dir = scope.resolve(id)?;
    if !ProjectDir::is_project(&dir) {
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
    if ProjectDir::is_project(as_path) {
        return Ok(as_path.to_path_buf());
    }
    if as_path.is_dir() {
        return Err(ApiError::new(
            Code::NotFound,
            format!(
                "{dir_or_name}: not a DocTune project (no {})",
                ProjectDir::FILE
            ),
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

/// Renames the project with id `id` to `name`. Its folder (and so its id) stays: runs, exports
/// and scripts that name it keep working.
pub fn rename(home: &Home, id: &str, name: &str) -> Result<ProjectSummary, ApiError> {
    let name = validate_name(name)?;
    let dir = dir_of(home, id)?;
    check_unique(home, &name, Some(id))?;
    let _lock = DirLock::acquire(&dir)?;
    let mut file = project_file::read(&dir)?;
    file.name = name;
    project_file::write(&dir, &file)?;
    Ok(summary(&dir, &file))
}

/// How a project is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Deletion {
    /// Moved to the OS trash, from where the user can restore it.
    Trash,
    /// Removed for good (where there is no trash, or the user asks).
    Permanent,
}

/// Deletes the project with id `id`: to the OS trash, or for good. Refused while a job works
/// in the project. Returns its name.
pub fn delete(home: &Home, id: &str, how: Deletion) -> Result<String, ApiError> {
    let dir = dir_of(home, id)?;
    let name = project_file::read(&dir)?.name;
    let _in_use = InUse::exclusive(&dir, "delete the project")?;
    // Windows cannot move a folder with a file open in it; elsewhere the lock is held throughout.
    #[cfg(windows)]
    drop(_in_use);
    remove_folder(&dir, &format!("project \"{name}\""), how)?;
    tracing::info!("deleted project {id} ({how:?})");
    Ok(name)
}

/// Moves `dir` (`what`, for messages: `project "Notes"`) to the OS trash, or removes it.
pub(crate) fn remove_folder(dir: &Path, what: &str, how: Deletion) -> Result<(), ApiError> {
    match how {
        Deletion::Trash => trash::delete(dir).map_err(|e| {
            ApiError::new(
                Code::Internal,
                format!(
                    "cannot move {what} ({}) to the trash: {e}; delete it permanently instead",
                    dir.display()
                ),
            )
        }),
        Deletion::Permanent => {
            fs::remove_dir_all(dir).map_err(|e| ApiError::io(dir, "cannot delete", &e))
        }
    }
}

/// A folder of a project the user may ask to see in the file manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "id")]
pub enum Folder {
    Project,
    Documents,
    Dataset(String),
    Run(String),
    Export(String),
}

/// Where `what` of the project with id `id` is: resolved inside the project, and existing.
pub fn folder(home: &Home, id: &str, what: &Folder) -> Result<PathBuf, ApiError> {
    let layout = ProjectDir::open(&dir_of(home, id)?)?;
    let path = match what {
        Folder::Project => layout.root().to_path_buf(),
        Folder::Documents => layout.area(Area::Documents)?,
        Folder::Dataset(x) => layout.item(Area::Datasets, x)?,
        Folder::Run(x) => layout.item(Area::Runs, x)?,
        Folder::Export(x) => layout.item(Area::Exports, x)?,
    };
    if !path.is_dir() {
        return Err(ApiError::new(
            Code::NotFound,
            format!("{}: no such folder", path.display()),
        ));
    }
    Ok(path)
}

/// Opens the project in `dir`.
pub fn open(dir: &Path) -> Result<Project, ApiError> {
    let file = project_file::read(dir)?;
    Ok(Project {
        summary: summary(dir, &file),
        documents: file.documents,
    })
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
