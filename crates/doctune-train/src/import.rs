//! A LoRA adapter trained elsewhere (a job bundle's `train.py`, Axolotl, any PEFT run)
//! registered as a run of a project, so DocTune's Compare and Export views work on it.
//!
//! The adapter is checked as any model file DocTune reads: safetensors only (a pickle is
//! refused by name), its configuration read, and its matrices loaded onto the base model (every
//! module must exist there and every shape match). The run folder is written in a staged folder
//! and renamed into place: `run.json` (with where the run came from), `adapter/` (the two PEFT
//! files only) and, when the source has one, `metrics.jsonl` (each line checked).

use crate::run_dir::{dataset_fingerprint, model_fingerprint};
use crate::{io, Method, MetricsLine, RunConfig, RunDir, RunFile, TrainError, RUN_SCHEMA};
use doctune_core::StagedDir;
use doctune_models::Target;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The files of a PEFT adapter DocTune copies.
const ADAPTER_FILES: [&str; 2] = ["adapter_config.json", "adapter_model.safetensors"];
/// Weights in formats DocTune never reads.
const PICKLES: [&str; 4] = [
    "adapter_model.bin",
    "adapter_model.pt",
    "pytorch_model.bin",
    "model.pt",
];

/// The adapter folder of an import source: `DIR/adapter/` (a bundle's `output/`) or `DIR`.
pub fn adapter_folder(source: &Path) -> Result<PathBuf, TrainError> {
    for dir in [source.join("adapter"), source.to_path_buf()] {
        if dir.join(ADAPTER_FILES[0]).is_file() {
            if !dir.join(ADAPTER_FILES[1]).is_file() {
                let pickle = PICKLES.iter().find(|p| dir.join(p).is_file());
                return Err(TrainError::Invalid(match pickle {
                    Some(p) => format!(
                        "{}: the adapter's weights are a pickle ({p}), which DocTune does not read; \
                         save it with safe_serialization=True (adapter_model.safetensors)",
                        dir.display()
                    ),
                    None => format!("{}: no adapter_model.safetensors", dir.display()),
                }));
            }
            return Ok(dir);
        }
    }
    if source.join("model").is_dir() {
        return Err(TrainError::Invalid(format!(
            "{}: a full fine-tuning result (model/) is a model, not a run: add it to the library \
             with `doctune model import {}`",
            source.display(),
            source.join("model").display()
        )));
    }
    Err(TrainError::Invalid(format!(
        "{}: no PEFT adapter here (adapter_config.json and adapter_model.safetensors, in the \
         folder or its adapter/)",
        source.display()
    )))
}

/// LoRA targets from PEFT's module names (`q_proj`, fused `qkv_proj`, …).
fn targets_of(modules: &[String]) -> Result<Vec<Target>, TrainError> {
    let mut out = Vec::new();
    for m in modules {
        let names: &[&str] = match m.as_str() {
            "qkv_proj" => &["q", "k", "v"],
            "gate_up_proj" => &["gate", "up"],
            other => &[other.trim_end_matches("_proj")],
        };
        for n in names {
            let t = Target::parse(n).ok_or_else(|| {
                TrainError::Invalid(format!(
                    "the adapter targets `{m}`, which DocTune cannot adapt"
                ))
            })?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// Registers the adapter in `source` as run `id` in `runs_dir`: `config` is the run's settings
/// as the job had them (its `base_model` the folder to check the adapter against; its method is
/// replaced by what the adapter says). `from` says where it came from, for `run.json`.
pub fn import_run(
    runs_dir: &Path,
    id: &str,
    source: &Path,
    mut config: RunConfig,
    from: &str,
) -> Result<RunFile, TrainError> {
    doctune_core::check_id("run", id).map_err(|e| TrainError::Invalid(e.to_string()))?;
    let adapter = adapter_folder(source)?;
    let info = doctune_models::read_adapter_config(&adapter)?;
    // Every module and shape against the base model: loading is the check.
    let mut model = doctune_models::load_model(&config.base_model, &Default::default())?;
    doctune_models::load_adapter(&mut model, &adapter)?;
    drop(model);
    config.method = Method::Lora {
        rank: info.spec.rank,
        alpha: info.spec.alpha,
        dropout: info.spec.dropout,
        rslora: info.spec.rslora,
        targets: targets_of(&info.target_modules)?,
    };
    // Metrics in DocTune's shape, when the trainer wrote them (the bundle's train.py does).
    let metrics_src = source.join(RunDir::METRICS_FILE);
    let mut metrics = Vec::new();
    if metrics_src.is_file() {
        let f = std::fs::File::open(&metrics_src).map_err(io(&metrics_src))?;
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(io(&metrics_src))?;
            if line.trim().is_empty() {
                continue;
            }
            let m: MetricsLine = serde_json::from_str(&line).map_err(|e| TrainError::Corrupt {
                path: metrics_src.clone(),
                message: format!("line {}: not a metrics line: {e}", i + 1),
            })?;
            metrics.push(m);
        }
    }
    std::fs::create_dir_all(runs_dir).map_err(io(runs_dir))?;
    let staged = StagedDir::new_in(runs_dir, id).map_err(io(runs_dir))?;
    let run = RunDir::at(staged.path());
    let dest = run.adapter_dir();
    std::fs::create_dir_all(&dest).map_err(io(&dest))?;
    for f in ADAPTER_FILES {
        std::fs::copy(adapter.join(f), dest.join(f)).map_err(io(&adapter.join(f)))?;
    }
    if !metrics.is_empty() {
        let mut text = String::new();
        for m in &metrics {
            text.push_str(
                &serde_json::to_string(m).map_err(|e| TrainError::Invalid(e.to_string()))?,
            );
            text.push('\n');
        }
        let p = run.metrics_file();
        std::fs::write(&p, text).map_err(io(&p))?;
    }
    let dataset_fingerprint = if doctune_dataset::DatasetDir::is_dataset(&config.dataset) {
        dataset_fingerprint(&config.dataset)?
    } else {
        String::new()
    };
    let file = RunFile {
        schema: RUN_SCHEMA,
        id: id.to_string(),
        created_at: doctune_core::now_rfc3339(),
        model_fingerprint: model_fingerprint(&config.base_model)?,
        dataset_fingerprint,
        config,
        imported_from: Some(from.to_string()),
    };
    let p = run.run_file();
    doctune_core::write_json_atomic(&p, &file).map_err(io(&p))?;
    staged.commit(id).map_err(io(&runs_dir.join(id)))?;
    Ok(file)
}
