//! The project folder, owned here and nowhere else: its file, its lock and its sub-folders
//! ([`Area`]), and the items inside them (a dataset, a run, an export), always resolved through
//! the project's [`Scope`] so that no name can reach outside it.
//!
//! ```text
//! <project>/project.json   name, creation time, the document list
//! <project>/.lock          held while project.json is read, changed and written
//! <project>/.in-use        held (shared) by every job working in the project; deleting the
//!                          project or removing a document needs it exclusively
//! <project>/documents/     originals, copied in, never modified
//! <project>/extracted/     text extracted from documents (<sha256>.json)
//! <project>/datasets/<id>/ built training sets
//! <project>/runs/<id>/     training runs
//! <project>/exports/<id>/  exported models
//! ```

use crate::id::{check_id, InvalidId};
use crate::scope::{Scope, ScopeError};
use std::path::{Path, PathBuf};

/// A sub-folder of every project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    Documents,
    Extracted,
    Datasets,
    Runs,
    Exports,
}

impl Area {
    pub const ALL: [Area; 5] = [
        Area::Documents,
        Area::Extracted,
        Area::Datasets,
        Area::Runs,
        Area::Exports,
    ];

    /// The folder's name in the project.
    pub fn dir_name(self) -> &'static str {
        match self {
            Area::Documents => "documents",
            Area::Extracted => "extracted",
            Area::Datasets => "datasets",
            Area::Runs => "runs",
            Area::Exports => "exports",
        }
    }

    /// What one item of the folder is called in messages ("dataset", "run").
    pub fn item_kind(self) -> &'static str {
        match self {
            Area::Documents => "document",
            Area::Extracted => "extraction",
            Area::Datasets => "dataset",
            Area::Runs => "run",
            Area::Exports => "export",
        }
    }
}

/// Why an item of a project cannot be named.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    #[error(transparent)]
    Scope(#[from] ScopeError),
}

/// A project's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectDir {
    scope: Scope,
}

impl ProjectDir {
    /// `project.json`.
    pub const FILE: &'static str = "project.json";
    /// The lock file held while `project.json` changes.
    pub const LOCK: &'static str = ".lock";
    /// The file every job working in the project holds a shared lock on (see the module docs).
    pub const IN_USE: &'static str = ".in-use";

    /// The project folder at `root` (which must exist; it is canonicalised).
    pub fn open(root: &Path) -> Result<Self, ScopeError> {
        Ok(Self {
            scope: Scope::new(root)?,
        })
    }

    /// The canonical folder.
    pub fn root(&self) -> &Path {
        self.scope.root()
    }

    /// The scope every path inside the project is resolved through.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// `project.json`.
    pub fn file(&self) -> PathBuf {
        self.root().join(Self::FILE)
    }

    /// Whether `root` holds a project (a `project.json`).
    pub fn is_project(root: &Path) -> bool {
        root.join(Self::FILE).is_file()
    }

    /// The project holding `item` when `item` is `<project>/<area>/<id>` (a run folder given
    /// on the command line, say); `None` for a folder elsewhere.
    pub fn containing(item: &Path, area: Area) -> Option<PathBuf> {
        let parent = item.parent()?;
        let project = parent.parent()?;
        (parent.file_name()? == area.dir_name() && Self::is_project(project))
            .then(|| project.to_path_buf())
    }

    /// A sub-folder (resolved: a link to outside the project is refused).
    pub fn area(&self, area: Area) -> Result<PathBuf, ScopeError> {
        self.scope.resolve(area.dir_name())
    }

    /// An item of a sub-folder by its id (`datasets/<id>`); the id must be one plain name.
    pub fn item(&self, area: Area, id: &str) -> Result<PathBuf, LayoutError> {
        check_id(area.item_kind(), id)?;
        Ok(self.scope.resolve(Path::new(area.dir_name()).join(id))?)
    }

    /// The extracted text of the document whose sha256 is `sha256` (`extracted/<sha256>.json`).
    pub fn extraction(&self, sha256: &str) -> Result<PathBuf, LayoutError> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidId {
                kind: "sha256",
                id: sha256.to_owned(),
            }
            .into());
        }
        Ok(self
            .scope
            .resolve(Path::new(Area::Extracted.dir_name()).join(format!("{sha256}.json")))?)
    }

    /// A document's copy (`documents/<file>`, `file` as `project.json` records it).
    pub fn document(&self, file: &str) -> Result<PathBuf, LayoutError> {
        check_id("document", file)?;
        Ok(self
            .scope
            .resolve(Path::new(Area::Documents.dir_name()).join(file))?)
    }

    /// Creates every sub-folder that is missing.
    pub fn create_areas(&self) -> std::io::Result<()> {
        for a in Area::ALL {
            std::fs::create_dir_all(self.root().join(a.dir_name()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_stay_inside_their_area() {
        let d = tempfile::tempdir().unwrap();
        let p = ProjectDir::open(d.path()).unwrap();
        p.create_areas().unwrap();
        let runs = p.area(Area::Runs).unwrap();
        assert_eq!(runs, p.root().join("runs"));
        assert_eq!(
            p.item(Area::Runs, "run-1").unwrap(),
            p.root().join("runs/run-1")
        );
        assert!(matches!(
            p.item(Area::Datasets, "../x"),
            Err(LayoutError::InvalidId(_))
        ));
        assert!(matches!(
            p.item(Area::Exports, ".staging"),
            Err(LayoutError::InvalidId(_))
        ));
        assert_eq!(
            p.item(Area::Runs, "").unwrap_err().to_string(),
            "`` is not a run id"
        );
        assert!(!ProjectDir::is_project(d.path()));
        std::fs::write(p.file(), b"{}").unwrap();
        assert!(ProjectDir::is_project(d.path()));
    }

    #[cfg(unix)]
    #[test]
    fn an_area_linked_outside_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("runs")).unwrap();
        let p = ProjectDir::open(d.path()).unwrap();
        assert!(p.area(Area::Runs).is_err());
        assert!(p.item(Area::Runs, "r").is_err());
    }
}
