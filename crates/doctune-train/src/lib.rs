//! The training loop: LoRA or full fine-tuning of a `doctune-models` model on a
//! `doctune-dataset` dataset, live, checkpointed and resumable.
//!
//! Start here: [`train`] creates `runs/<id>/` ([`RunDir`]: `run.json` with the configuration
//! and the fingerprints of the base model and dataset) and runs [`RunConfig`]'s steps
//! (`runner.rs`: `Runner::step` reads micro-batches from the dataset in a seeded
//! order per epoch, masks and normalises the loss by the target tokens of the whole optimiser
//! step — so `k` accumulated micro-batches equal one batch `k` times larger — clips the global
//! gradient norm and steps AdamW ([`optim`]) with transformers' schedules), evaluating on the
//! validation split. Every step is appended to `metrics.jsonl`; `Metrics` events go to the sink
//! at most ~10 per second.
//!
//! Checkpoints (`checkpoint.rs`: trainable weights, optimiser moments, and the step, data
//! cursor and generator state) are built in a staged folder and renamed into place, every
//! `checkpoint_every` steps, at the end and on cancel; the last `keep_checkpoints` are kept.
//! [`resume`] continues from the newest one — bit for bit as if the run had never stopped —
//! and refuses if the base model or dataset changed.
//!
//! Modules: [`config`] (settings, defaults, presets, overrides), [`run_dir`] (the run folder's
//! files), `data.rs` (example order, batches), `runner.rs` (the loop), `checkpoint.rs`,
//! [`optim`] (AdamW, schedules, clipping, loss scaling), [`memory`] (the estimate).

mod checkpoint;
pub mod config;
mod data;
pub mod import;
pub mod memory;
pub mod optim;
pub mod run_dir;
mod runner;

pub use config::{Method, MethodKind, Preset, RunConfig, RunOverrides};
pub use data::epoch_order;
pub use run_dir::{
    checkpoints, BaseEval, MetricsLine, RunDir, RunFile, CHECKPOINT_WEIGHTS, RUN_SCHEMA,
};

use doctune_core::{CancelToken, ProgressSink};
use run_dir::{dataset_fingerprint, model_fingerprint};
use runner::Runner;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What can go wrong in a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The settings or the inputs they name cannot make a run.
    #[error("{0}")]
    Invalid(String),
    /// A file DocTune wrote (run.json, a checkpoint, a dataset record) does not read back.
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error(transparent)]
    Model(#[from] doctune_models::ModelError),
    #[error(transparent)]
    Dataset(#[from] doctune_dataset::DatasetError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the run needs about {} of memory but {} is available; try {}", doctune_core::units::human_bytes(*needed), doctune_core::units::human_bytes(*available), suggestions.join(", or "))]
    OutOfMemory {
        needed: u64,
        available: u64,
        suggestions: Vec<String>,
    },
    #[error("cannot resume {}: {what} changed since the checkpoint", run.display())]
    Changed { run: PathBuf, what: String },
    #[error("training stopped at step {step}: {detail}")]
    Diverged { step: u64, detail: String },
    #[error("training computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// `TrainError::Io` on `path`, for `map_err`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The run's id (its folder name).
    pub id: String,
    pub run_dir: PathBuf,
    pub steps: u64,
    pub total_steps: u64,
    pub final_loss: Option<f64>,
    pub eval_loss: Option<f64>,
    /// `exp(eval_loss)`.
    pub eval_perplexity: Option<f64>,
    /// The same held-out loss before the first step (the base model's, for LoRA).
    pub base_eval_loss: Option<f64>,
    pub cancelled: bool,
    pub early_stopped: bool,
    /// The PEFT adapter (LoRA) or the newest checkpoint (full).
    pub output: PathBuf,
}

/// The memory estimate of `cfg`, or [`TrainError::OutOfMemory`] with suggestions when it is
/// more than `available` bytes.
pub fn preflight(cfg: &RunConfig, available: u64) -> Result<memory::MemoryEstimate, TrainError> {
    let model = doctune_models::ModelConfig::load(&cfg.base_model)?;
    let seq_len = doctune_dataset::read_meta(&cfg.dataset)?.options.seq_len;
    let est = memory::estimate(&model, cfg, seq_len);
    if est.total > available {
        return Err(TrainError::OutOfMemory {
            needed: est.total,
            available,
            suggestions: memory::suggestions(cfg, seq_len),
        });
    }
    Ok(est)
}

/// Starts a new run in `runs_dir/<id>/`.
pub fn train(
    cfg: RunConfig,
    runs_dir: &Path,
    id: &str,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<RunSummary, TrainError> {
    cfg.validate()?;
    doctune_core::check_id("run", id).map_err(|e| TrainError::Invalid(e.to_string()))?;
    let dir = runs_dir.join(id);
    if dir.exists() {
        return Err(TrainError::Invalid(format!(
            "{} already exists",
            dir.display()
        )));
    }
    let run = RunFile {
        schema: RUN_SCHEMA,
        id: id.to_string(),
        created_at: doctune_core::now_rfc3339(),
        model_fingerprint: model_fingerprint(&cfg.base_model)?,
        dataset_fingerprint: dataset_fingerprint(&cfg.dataset)?,
        config: cfg.clone(),
        imported_from: None,
    };
    // Load and check everything before the run folder exists: a configuration that cannot run
    // leaves nothing behind.
    let run_dir = RunDir::at(&dir);
    let mut runner = Runner::open(run_dir.clone(), cfg)?;
    // The folder appears with its run.json or not at all (a full disk leaves nothing behind).
    let staged = doctune_core::StagedDir::new_in(runs_dir, id).map_err(io(runs_dir))?;
    let staged_run = RunDir::at(staged.path()).run_file();
    doctune_core::write_json_atomic(&staged_run, &run).map_err(io(&staged_run))?;
    staged.commit(id).map_err(io(&dir))?;
    runner.run(sink, cancel)
}

/// The mean validation loss (per trained token, in nats) of the model in `model_dir` on the
/// first `max_examples` examples of the dataset's validation split, on the CPU in f32: what a
/// run's evaluation measures, for a model outside a run (an untrained model's baseline, an
/// export). `None` when the split holds no trained token.
pub fn evaluate(
    model_dir: &Path,
    dataset_dir: &Path,
    max_examples: usize,
) -> Result<Option<f64>, TrainError> {
    let model = doctune_models::load_model(model_dir, &doctune_models::LoadOptions::default())?;
    let mut val =
        doctune_dataset::DatasetDir::at(dataset_dir).index(doctune_dataset::Split::Val)?;
    let n = val.len().min(max_examples);
    runner::mean_loss(&model, &mut val, n, 8)
}

/// Continues the run in `run_dir` from its newest checkpoint (or from the start if it has none).
pub fn resume(
    run_dir: &Path,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<RunSummary, TrainError> {
    let dir = RunDir::at(run_dir);
    let run = dir.read()?;
    if let Some(from) = &run.imported_from {
        return Err(TrainError::Invalid(format!(
            "{}: imported from {from}; a run trained elsewhere has no checkpoint to resume",
            run_dir.display()
        )));
    }
    run.check_base_model(run_dir)?;
    run.check_dataset(run_dir)?;
    run.config.validate()?;
    let mut runner = Runner::open(dir.clone(), run.config)?;
    if let Some(ckpt) = dir.checkpoints().pop() {
        runner.restore(&ckpt)?;
    }
    runner.run(sink, cancel)
}
