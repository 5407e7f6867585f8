//! Training runs of a project: start one (a run folder under the project's `runs/`), resume
//! one, list them with their history.

use crate::generate::resolve_model;
use crate::{ApiError, Home};
use doctune_core::{CancelToken, Code, ProgressSink, Scope};
pub use doctune_models::{DeviceKind, Precision, Target};
use doctune_train::TrainError;
pub use doctune_train::{Method, MetricsLine, Preset, RunConfig, RunSummary};
use serde::Serialize;
use std::path::{Path, PathBuf};

fn train_error(e: TrainError) -> ApiError {
    let code = match &e {
        TrainError::OutOfMemory { .. } => Code::NoSpace,
        TrainError::Io { .. } | TrainError::Candle(_) => Code::Internal,
        _ => Code::InvalidInput,
    };
    ApiError::new(code, e.to_string())
}

/// A new run id: the time, unique in the folder.
fn new_id(runs: &Path) -> String {
    crate::projects::stamped_id(runs, "run")
}

/// The dataset folder a reference names: a dataset id of the project, or a folder.
pub fn resolve_dataset(project_dir: &Path, dataset: &str) -> Result<PathBuf, ApiError> {
    if let Ok(p) = crate::dataset::dir_of(project_dir, dataset) {
        return Ok(p);
    }
    let p = PathBuf::from(dataset);
    if p.join("meta.json").is_file() {
        return Ok(p);
    }
    Err(ApiError::new(
        Code::NotFound,
        format!("{dataset}: neither a dataset of the project nor a dataset folder"),
    ))
}

/// Starts a run of `config` (whose `base_model` and `dataset` may be library/dataset ids) in the
/// project; returns when it ends. `on_start` receives the run folder as soon as it exists.
pub fn start(
    home: &Home,
    project_dir: &Path,
    mut config: RunConfig,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
    on_start: &mut dyn FnMut(&Path),
) -> Result<RunSummary, ApiError> {
    config.base_model = resolve_model(home, &config.base_model.display().to_string())?;
    config.dataset = resolve_dataset(project_dir, &config.dataset.display().to_string())?;
    // Refuse settings that cannot run and a run that will not fit, before loading anything (and
    // before the caller is told of a run folder).
    config.validate().map_err(train_error)?;
    doctune_train::preflight(&config, available_memory(config.device)).map_err(train_error)?;
    let runs = Scope::new(project_dir)?.resolve("runs")?;
    std::fs::create_dir_all(&runs).map_err(|e| ApiError::io(&runs, "cannot create", &e))?;
    let id = new_id(&runs);
    on_start(&runs.join(&id));
    doctune_train::train(config, &runs, &id, sink, cancel).map_err(train_error)
}

/// Resumes the run in `run_dir` from its newest checkpoint.
pub fn resume(
    run_dir: &Path,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<RunSummary, ApiError> {
    doctune_train::resume(run_dir, sink, cancel).map_err(train_error)
}

/// A run as lists show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    pub id: String,
    pub path: String,
    pub config: serde_json::Value,
    pub created_at: String,
    /// Steps done (the last line of `metrics.jsonl`).
    pub steps: u64,
    pub last: Option<MetricsLine>,
    pub checkpoints: usize,
    pub adapter: Option<String>,
}

/// The runs of a project, newest first.
pub fn list(project_dir: &Path) -> Result<Vec<RunInfo>, ApiError> {
    let runs = Scope::new(project_dir)?.resolve("runs")?;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&runs) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let dir = e.path();
        let Ok(bytes) = std::fs::read(dir.join("run.json")) else {
            continue;
        };
        let Ok(run) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let last = history(&dir).ok().and_then(|h| h.last().cloned());
        let adapter = dir.join("adapter/adapter_config.json");
        out.push(RunInfo {
            id: e.file_name().to_string_lossy().into_owned(),
            path: dir.display().to_string(),
            config: run["config"].clone(),
            created_at: run["createdAt"].as_str().unwrap_or_default().to_string(),
            steps: last.as_ref().map_or(0, |l| l.step),
            last,
            checkpoints: doctune_train::checkpoints(&dir).len(),
            adapter: adapter
                .is_file()
                .then(|| dir.join("adapter").display().to_string()),
        });
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(out)
}

/// Every metrics line of a run (for redrawing its curves).
pub fn history(run_dir: &Path) -> Result<Vec<MetricsLine>, ApiError> {
    let p = run_dir.join("metrics.jsonl");
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ApiError::io(&p, "cannot read", &e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// What the app's UI asks for: a library model and a dataset of the project, by id.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppTrainRequest {
    pub model: String,
    pub dataset: String,
    pub config: RunConfig,
}

impl AppTrainRequest {
    /// The run configuration, with the model checked against the library and resolved to its
    /// folder, and the dataset resolved under the project's `datasets/`.
    pub fn resolve(&self, home: &Home, project_dir: &Path) -> Result<RunConfig, ApiError> {
        crate::models::require_in_library(home, &self.model)?;
        let mut config = self.config.clone();
        config.base_model = resolve_model(home, &self.model)?;
        config.dataset = crate::dataset::dir_of(project_dir, &self.dataset)?;
        Ok(config)
    }
}

/// A preset's settings for a dataset of the project.
pub fn preset(project_dir: &Path, dataset: &str, preset: Preset) -> Result<RunConfig, ApiError> {
    let dir = crate::dataset::dir_of(project_dir, dataset)?;
    let meta = doctune_dataset::read_meta(&dir).map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(preset.apply(&RunConfig::default(), meta.stats.train_examples))
}

/// The run folder of run `id` of a project (confined to its `runs/`).
pub fn run_dir(project_dir: &Path, id: &str) -> Result<PathBuf, ApiError> {
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        return Err(ApiError::invalid(format!("`{id}` is not a run id")));
    }
    let p = Scope::new(project_dir)?.resolve(Path::new("runs").join(id))?;
    if !p.join("run.json").is_file() {
        return Err(ApiError::new(
            Code::NotFound,
            format!("no run `{id}` in {}", project_dir.display()),
        ));
    }
    Ok(p)
}

/// A run's memory estimate and what the machine has free.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EstimateReport {
    pub estimate: doctune_train::memory::MemoryEstimate,
    pub available_bytes: u64,
    pub fits: bool,
    /// When it does not fit: what would make it fit.
    pub suggestions: Vec<String>,
}

/// The memory a run on `device` can use: the free memory of the first NVIDIA GPU for CUDA (as
/// NVML reports it; unbounded when NVML cannot tell, so the run itself finds out), free RAM
/// otherwise (Metal's memory is the RAM).
pub fn available_memory(device: DeviceKind) -> u64 {
    match device {
        DeviceKind::Cuda => doctune_gpu::Gpus::init()
            .free_memory_bytes(0)
            .unwrap_or(u64::MAX),
        DeviceKind::Cpu | DeviceKind::Metal => doctune_gpu::system_info().available_memory_bytes,
    }
}

/// The memory estimate of a run configuration (already resolved to folders).
pub fn estimate(config: &RunConfig) -> Result<EstimateReport, ApiError> {
    let available = available_memory(config.device);
    match doctune_train::preflight(config, u64::MAX) {
        Ok(estimate) => {
            let fits = estimate.total <= available;
            let seq_len = doctune_dataset::read_meta(&config.dataset)
                .map(|m| m.options.seq_len)
                .unwrap_or(1024);
            Ok(EstimateReport {
                estimate,
                available_bytes: available,
                fits,
                suggestions: if fits {
                    Vec::new()
                } else {
                    doctune_train::memory::suggestions(config, seq_len)
                },
            })
        }
        Err(e) => Err(train_error(e)),
    }
}
