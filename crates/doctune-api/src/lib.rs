//! DocTune's use cases, shared by the desktop app and the `doctune` CLI.
//!
//! - [`Home`]: where DocTune keeps its projects (the app data folder, or `DOCTUNE_HOME`).
//! - [`projects`]: create, list and open projects (a folder each, described by `project.json`).
//! - [`documents`]: add files to a project — copied into `documents/`, hashed, typed, deduplicated.
//! - [`doctor`]: what this machine offers (OS, CPU, RAM, disk, GPU, keychain).
//! - [`ApiError`]: the one error shape both shells show: `{ code, message, details? }`.
//!
//! Nothing here knows about Tauri; everything here is exercised by `cargo test -p doctune-api`.

pub mod doctor;
pub mod documents;
mod error;
mod home;
pub mod projects;

pub use doctor::{doctor, DoctorReport};
pub use documents::{add_documents, AddFailure, AddReport, Duplicate, Limits};
pub use error::ApiError;
pub use home::Home;
pub use projects::{DocumentEntry, Project, ProjectSummary};

pub use doctune_core::{CancelToken, Code, JobEvent, ProgressSink};
