//! DocTune's use cases, shared by the desktop app and the `doctune` CLI.
//!
//! - [`Home`]: where DocTune keeps its projects (the app data folder, or `DOCTUNE_HOME`).
//! - [`projects`]: create, list and open projects (a folder each, laid out as
//!   `doctune_core::ProjectDir` says, described by `project.json`: [`project_file`]).
//! - [`documents`]: add files to a project — copied into `documents/`, hashed, typed, deduplicated.
//! - [`doctor`]: what this machine offers (OS, CPU, RAM, disk, GPU, keychain).
//! - [`ingest`]: extract the text of a project's documents (cached by sha256).
//! - [`models`]: the model library; pull from the Hub, import a local folder.
//! - [`token`]: the Hub access token, kept in the OS keychain only.
//! - [`dataset`]: build a project's datasets (pretraining, instruction, or question–answer pairs
//!   made from the documents: `qa`), list and preview them, export a dataset's pairs.
//! - [`train`]: start, resume and list training runs.
//! - [`bundle`](mod@bundle): the same job as a bundle for cluster trainers (transformers
//!   `Trainer` + PEFT under torchrun, Axolotl), and their adapters imported as runs.
//! - [`scratch`]: a new model for a project (its own tokenizer and a small Llama), and
//!   `--method scratch` runs.
//! - [`demo`]: the built-in demo — the whole job on DocTune's own user guide.
//! - [`export`](mod@export): export a run (PEFT, merged, GGUF, GGUF LoRA, Ollama) and list exports.
//! - [`generate`](mod@generate): generate text with a base model (and a LoRA adapter), streamed.
//! - [`Jobs`]: long jobs the app can cancel.
//! - [`ApiError`]: the one error shape both shells show: `{ code, message, details? }`.
//!
//! Nothing here knows about Tauri; everything here is exercised by `cargo test -p doctune-api`.

pub mod bundle;
pub mod dataset;
pub mod demo;
pub mod doctor;
pub mod documents;
mod error;
pub mod export;
pub mod generate;
mod home;
mod hub;
pub mod ingest;
mod jobs;
mod lock;
pub mod models;
pub mod preferences;
pub mod project_file;
pub mod projects;
mod qa;
pub mod scratch;
pub mod token;
pub mod train;

/// Call first in each shell's `main`: it sets up the training thread pools, then, started as a
/// worker (by this same binary), it runs one job — extracting a document, or rendering a
/// model's chat templates — under memory, CPU and time limits, and exits; otherwise it lets
/// extraction and template rendering run in such children from then on (see
/// `doctune_core::worker`).
pub fn serve_worker_if_asked() {
    // Before any thread exists (see `doctune_models::cpu::tune_thread_pools`).
    doctune_models::cpu::tune_thread_pools();
    doctune_core::worker::serve_if_worker(&[
        (doctune_ingest::worker::JOB, doctune_ingest::worker::serve),
        (
            doctune_tokenizer::RENDER_JOB,
            doctune_tokenizer::serve_render,
        ),
    ]);
}

/// Logs to stderr at the level `DOCTUNE_LOG` names (an `EnvFilter`), `warn` by default. Both
/// shells call this once at start.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DOCTUNE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub use dataset::{DatasetRequest, DatasetSummary, PreviewExample};
pub use doctor::{doctor, DoctorReport};
pub use documents::{add_documents, remove_document, AddFailure, AddReport, Duplicate, Limits};
pub use error::ApiError;
pub use generate::{GenerateRequest, GenerateResult, ModelCache};
pub use home::{DataFolder, Home, HomeSource};
pub use jobs::Jobs;
pub use models::{ModelEntry, ModelSource};
pub use project_file::DocumentEntry;
pub use projects::{Project, ProjectSummary};
pub use token::TokenStatus;

pub use doctune_core::{CancelToken, Code, JobEvent, JobId, ProgressSink};
pub use doctune_gpu::Gpus;
pub use doctune_secrets::{Keychain, MemoryStore, SecretStore, Sensitive};
