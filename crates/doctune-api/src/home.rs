//! Where DocTune keeps its data: `$DOCTUNE_HOME` if set, else the OS's per-user data folder
//! (`~/.local/share/DocTune` on Linux, `~/Library/Application Support/DocTune` on macOS,
//! `%APPDATA%\DocTune` on Windows). [`Home`] owns its layout:
//!
//! ```text
//! <home>/projects/<id>/   one folder per project (see doctune_core::ProjectDir)
//! <home>/hub/             models pulled from the Hub, in Hugging Face's cache layout
//! <home>/models/<id>/     private copies of imported model folders
//! <home>/models.json      the model library
//! <home>/preferences.json the person's defaults (training device and precision)
//! <home>/demo/            the built-in demo's documents, written out to be added
//! <home>/.lock            held while models.json changes
//! ```

use crate::ApiError;
use std::path::{Path, PathBuf};

/// DocTune's data folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// A home at an explicit folder (tests, `--home`).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The default home: `DOCTUNE_HOME`, else the OS data folder.
    pub fn from_env() -> Result<Self, ApiError> {
        if let Some(p) = std::env::var_os("DOCTUNE_HOME").filter(|p| !p.is_empty()) {
            return Ok(Self::at(PathBuf::from(p)));
        }
        dirs::data_dir()
            .map(|d| Self::at(d.join("DocTune")))
            .ok_or_else(|| {
                ApiError::invalid(
                    "cannot tell where to keep DocTune's data: no home folder; set DOCTUNE_HOME",
                )
            })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder that holds one folder per project.
    pub fn projects_dir(&self) -> PathBuf {
        self.root.join("projects")
    }

    /// The Hub cache (Hugging Face's layout).
    pub fn hub_dir(&self) -> PathBuf {
        self.root.join("hub")
    }

    /// Private copies of imported model folders.
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    /// Where the built-in demo writes its documents before adding them to its project.
    pub fn demo_dir(&self) -> PathBuf {
        self.root.join("demo")
    }

    /// The model library.
    pub fn library_file(&self) -> PathBuf {
        self.root.join("models.json")
    }

    /// The person's defaults ([`crate::preferences`]).
    pub fn preferences_file(&self) -> PathBuf {
        self.root.join("preferences.json")
    }
}
