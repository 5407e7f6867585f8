//! An exclusive lock on a folder (a project, or DocTune's home for the model library), held
//! while a JSON file in it is read, changed and written, so that the app and the CLI cannot
//! lose each other's changes. Released on drop.
//!
//! Beside it, [`InUse`]: a shared lock every job working in a project holds for its whole run
//! (training, a dataset build, an export, extraction, adding files), so that deleting the
//! project or removing a document — which need it exclusively — is refused while any job, in
//! this process or another (the CLI), still works there.

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

/// A lock on a project's [`ProjectDir::IN_USE`] file: shared while a job works in the project,
/// exclusive while the project or one of its documents is removed. Released on drop.
#[derive(Debug)]
pub(crate) struct InUse(fs::File);

impl InUse {
    fn file(project_dir: &Path) -> Result<fs::File, ApiError> {
        let path = project_dir.join(ProjectDir::IN_USE);
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ApiError::io(&path, "cannot open lock file", &e))
    }

    /// Held by a job for as long as it works in the project in `project_dir`.
    pub fn shared(project_dir: &Path) -> Result<Self, ApiError> {
        let f = Self::file(project_dir)?;
        f.lock_shared()
            .map_err(|e| ApiError::io(project_dir, "cannot lock the project", &e))?;
        Ok(Self(f))
    }

    /// Exclusive use of the project, now or never: `what` is refused while a job works in it.
    pub fn exclusive(project_dir: &Path, what: &str) -> Result<Self, ApiError> {
        let f = Self::file(project_dir)?;
        match f.try_lock() {
            Ok(()) => Ok(Self(f)),
            Err(fs::TryLockError::WouldBlock) => Err(ApiError::invalid(format!(
                "{}: a job is still working in this project (training, a dataset build, an \
                 export or extraction); stop it or let it finish, then {what}",
                project_dir.display()
            ))),
            Err(fs::TryLockError::Error(e)) => {
                Err(ApiError::io(project_dir, "cannot lock the project", &e))
            }
        }
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_in_the_project_blocks_exclusive_use_until_it_ends() {
        let d = tempfile::tempdir().unwrap();
        let a = InUse::shared(d.path()).unwrap();
        let b = InUse::shared(d.path()).unwrap();
        let e = InUse::exclusive(d.path(), "delete it").unwrap_err();
        assert!(
            e.message.contains("a job is still working"),
            "{}",
            e.message
        );
        drop(a);
        assert!(InUse::exclusive(d.path(), "delete it").is_err());
        drop(b);
        let x = InUse::exclusive(d.path(), "delete it").unwrap();
        drop(x);
    }
}
