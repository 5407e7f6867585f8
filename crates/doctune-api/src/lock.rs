//! An exclusive lock on a folder (a project, or DocTune's home for the model library), held
//! while a JSON file in it is read, changed and written, so that the app and the CLI cannot
//! lose each other's changes. Released on drop.

use crate::ApiError;
use doctune_core::ProjectDir;
use std::fs;
use std::path::Path;

#[derive(Debug)]
pub(crate) struct DirLock(fs::File);

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<Self, ApiError> {
        let path = dir.join(ProjectDir::LOCK);
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
