//! Training runs of a project: the settings a run will use (defaults, presets and what a person
//! chose, combined by `doctune-train`'s rules), start one (a run folder under the project's
//! `runs/`), resume one, list them with their history.

use crate::lock::InUse;
use crate::models::resolve_model;
use crate::{ApiError, Home};
use doctune_core::{Area, CancelToken, Code, ProgressSink, ProjectDir};
use doctune_dataset::DatasetDir;
pub use doctune_models::{DeviceKind, Precision, Target};
use doctune_train::RunDir;
pub use doctune_train::{
    Method, MethodKind, MetricsLine, Preset, RunConfig, RunOverrides, RunSummary,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The dataset folder a reference names: a dataset id of the project, or a folder.
pub fn resolve_dataset(project_dir: &Path, dataset: &str) -> Result<PathBuf, ApiError> {
    if let Ok(p) = crate::dataset::dir_of(project_dir, dataset) {
        return Ok(p);
    }
    let p = PathBuf::from(dataset);
    if DatasetDir::is_dataset(&p) {
        return Ok(p);
    }
    Err(ApiError::new(
        Code::NotFound,
        format!("{dataset}: neither a dataset of the project nor a dataset folder"),
    ))
}

/// The settings of a run: [`RunConfig::default`], or `preset` scaled to the dataset in
/// `dataset_dir` (its training examples; the intervals follow a chosen step count), with
/// `overrides` applied on top. Both shells build their runs through here.
pub fn settings(
    dataset_dir: &Path,
    preset: Option<Preset>,
    overrides: &RunOverrides,
) -> Result<RunConfig, ApiError> {
    let base = match preset {
        None => RunConfig::default(),
        Some(p) => {
            let meta = DatasetDir::open(dataset_dir)?.read_meta()?;
            p.apply_with_steps(
                &RunConfig::default(),
                meta.stats.train_examples,
                overrides.max_steps,
            )
        }
    };
    let mut config = overrides.apply(base);
    config.dataset = dataset_dir.to_path_buf();
    Ok(config)
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
    config.validate()?;
    doctune_train::preflight(&config, available_memory(config.device))?;
    let _in_use = InUse::shared(project_dir)?;
    let runs = ProjectDir::open(project_dir)?.area(Area::Runs)?;
    std::fs::create_dir_all(&runs).map_err(|e| ApiError::io(&runs, "cannot create", &e))?;
    let id = doctune_core::stamped_id(&runs, "run");
    on_start(&runs.join(&id));
    Ok(doctune_train::train(config, &runs, &id, sink, cancel)?)
}

/// Resumes the run in `run_dir` from its newest checkpoint.
pub fn resume(
    run_dir: &Path,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<RunSummary, ApiError> {
    let project = ProjectDir::containing(run_dir, Area::Runs);
    let _in_use = project.as_deref().map(InUse::shared).transpose()?;
    Ok(doctune_train::resume(run_dir, sink, cancel)?)
}

/// A run as lists show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    pub id: String,
    pub path: String,
    pub config: RunConfig,
    pub created_at: String,
    /// Steps done (the last line of `metrics.jsonl`).
    pub steps: u64,
    /// Steps the run was set to take (`None` when its dataset is gone).
    pub total_steps: Option<u64>,
    pub last: Option<MetricsLine>,
    /// The held-out loss before the first step (the base model's, for LoRA), when measured.
    pub base_eval_loss: Option<f64>,
    pub checkpoints: usize,
    pub adapter: Option<String>,
    /// The ids of the project's exports made from this run.
    pub exports: Vec<String>,
}

/// The runs of a project, newest first. A folder whose `run.json` does not read is skipped
/// (and logged).
pub fn list(project_dir: &Path) -> Result<Vec<RunInfo>, ApiError> {
    let runs = ProjectDir::open(project_dir)?.area(Area::Runs)?;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&runs) else {
        return Ok(out);
    };
    let exports = crate::export::list(project_dir)?;
    for e in entries.flatten() {
        let dir = RunDir::at(e.path());
        if !RunDir::is_run(dir.path()) {
            continue;
        }
        let run = match dir.read() {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!("skipping {}: {err}", dir.path().display());
                continue;
            }
        };
        let last = dir.last_metrics().ok().flatten();
        out.push(RunInfo {
            id: dir.id(),
            path: dir.path().display().to_string(),
            created_at: run.created_at,
            steps: last.as_ref().map_or(0, |l| l.step),
            total_steps: doctune_dataset::read_meta(&run.config.dataset)
                .ok()
                .map(|m| run.config.total_steps(m.stats.train_examples)),
            config: run.config,
            last,
            base_eval_loss: dir.base_eval().map(|b| b.eval_loss),
            checkpoints: dir.checkpoints().len(),
            adapter: dir.adapter().map(|a| a.display().to_string()),
            exports: exports
                .iter()
                .filter(|x| x.run_id == run.id)
                .map(|x| x.id.clone())
                .collect(),
        });
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(out)
}

/// Every metrics line of a run (for redrawing its curves).
pub fn history(run_dir: &Path) -> Result<Vec<MetricsLine>, ApiError> {
    Ok(RunDir::at(run_dir).history()?)
}

/// What the app's UI asks for: a library model and a dataset of the project, by id, and the
/// settings the person chose (a preset and overrides; Rust fills in the rest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppTrainRequest {
    pub model: String,
    pub dataset: String,
    #[serde(default)]
    pub preset: Option<Preset>,
    #[serde(default)]
    pub overrides: RunOverrides,
}

impl AppTrainRequest {
    /// The run configuration, with the model checked against the library and resolved to its
    /// folder, the dataset resolved under the project's `datasets/`, and the device and
    /// precision, when the request names none, from the person's preferences (`gpus`: this
    /// machine's).
    pub fn resolve(
        &self,
        home: &Home,
        project_dir: &Path,
        gpus: &[doctune_gpu::GpuInfo],
    ) -> Result<RunConfig, ApiError> {
        crate::models::require_in_library(home, &self.model)?;
        let dataset = crate::dataset::dir_of(project_dir, &self.dataset)?;
        let mut overrides = self.overrides.clone();
        crate::preferences::apply(home, gpus, &mut overrides);
        let mut config = settings(&dataset, self.preset, &overrides)?;
        config.base_model = resolve_model(home, &self.model)?;
        Ok(config)
    }
}

/// A preset as the Train view offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresetInfo {
    pub preset: Preset,
    pub label: &'static str,
    pub description: &'static str,
}

/// Every preset, quickest first.
pub fn presets() -> Vec<PresetInfo> {
    Preset::ALL
        .iter()
        .map(|&preset| PresetInfo {
            preset,
            label: preset.label(),
            description: preset.description(),
        })
        .collect()
}

/// A preset's settings for a dataset of the project.
pub fn preset(project_dir: &Path, dataset: &str, preset: Preset) -> Result<RunConfig, ApiError> {
    let dir = crate::dataset::dir_of(project_dir, dataset)?;
    settings(&dir, Some(preset), &RunOverrides::default())
}

/// Deletes run `id` of the project in `project_dir` — to the OS trash, or for good — after its
/// job has stopped: refused while any job works in the project. Its exports stay.
pub fn delete_run(
    project_dir: &Path,
    id: &str,
    how: crate::projects::Deletion,
) -> Result<(), ApiError> {
    let dir = run_dir(project_dir, id)?;
    let _in_use = InUse::exclusive(project_dir, "delete the run")?;
    crate::projects::remove_folder(&dir, &format!("run {id}"), how)
}

/// The run folder of run `id` of a project (confined to its `runs/`).
pub fn run_dir(project_dir: &Path, id: &str) -> Result<PathBuf, ApiError> {
    let p = ProjectDir::open(project_dir)?.item(Area::Runs, id)?;
    if !RunDir::is_run(&p) {
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

/// Whether fine-tuning a model fits this machine, before any dataset exists: the memory
/// estimate of the Balanced preset (LoRA) and of full fine-tuning, at the dataset builder's
/// default sequence length, on the device a run would use by default (the person's preference,
/// else the best available: [`crate::preferences::training_device`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelFit {
    pub device: DeviceKind,
    pub precision: Precision,
    pub seq_len: usize,
    pub available_bytes: u64,
    pub lora_bytes: u64,
    pub lora_fits: bool,
    pub full_bytes: u64,
    pub full_fits: bool,
}

/// See [`ModelFit`]; `model` is a library id or a model folder.
pub fn fit(home: &Home, model: &str, gpus: &[doctune_gpu::GpuInfo]) -> Result<ModelFit, ApiError> {
    let dir = resolve_model(home, model)?;
    let cfg = doctune_models::ModelConfig::load(&dir)?;
    let (device, precision) = crate::preferences::training_device(home, gpus);
    let seq_len = doctune_dataset::BuildOptions::default().seq_len;
    let base = RunConfig {
        device,
        precision,
        ..RunConfig::default()
    };
    let lora = Preset::Balanced.apply(&base, 1000);
    let full = RunConfig {
        method: Method::Full,
        ..lora.clone()
    };
    let available = available_memory(device);
    let lora_bytes = doctune_train::memory::estimate(&cfg, &lora, seq_len).total;
    let full_bytes = doctune_train::memory::estimate(&cfg, &full, seq_len).total;
    Ok(ModelFit {
        device,
        precision,
        seq_len,
        available_bytes: available,
        lora_bytes,
        lora_fits: lora_bytes <= available,
        full_bytes,
        full_fits: full_bytes <= available,
    })
}

/// The memory estimate of a run configuration (already resolved to folders).
pub fn estimate(config: &RunConfig) -> Result<EstimateReport, ApiError> {
    let available = available_memory(config.device);
    let estimate = doctune_train::preflight(config, u64::MAX)?;
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
