//! The run folder, owned here: `run.json` ([`RunFile`]), `metrics.jsonl` (one [`MetricsLine`]
//! per optimiser step), `base-eval.json` ([`BaseEval`]: the held-out loss before the first
//! step), `checkpoints/step-NNNNNNNN/` (see `checkpoint.rs`) and, for a finished LoRA run,
//! `adapter/` (a PEFT adapter). Also the fingerprints that tie a run to the exact base
//! model and dataset it was started on.

use crate::{io, RunConfig, TrainError};
use doctune_dataset::DatasetDir;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// `run.json`'s schema version.
pub const RUN_SCHEMA: u32 = 1;

/// A checkpoint's state file; a checkpoint folder without one is not a checkpoint.
pub(crate) const STATE_FILE: &str = "state.json";
/// A checkpoint's trained weights: LoRA matrices by PEFT's names, or (full fine-tuning) every
/// weight by its Hugging Face name, in f32.
pub const CHECKPOINT_WEIGHTS: &str = "trainable.safetensors";

/// A checkpoint's folder name: `step-00000042`.
pub(crate) fn checkpoint_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// `run.json`: what a run was started with, and what it must still find to resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFile {
    pub schema: u32,
    pub id: String,
    pub created_at: String,
    pub config: RunConfig,
    pub model_fingerprint: String,
    pub dataset_fingerprint: String,
    /// A run trained elsewhere and imported (`doctune runs import`): where it came from. Such a
    /// run has an adapter and perhaps metrics, no checkpoints; it cannot be resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
}

impl RunFile {
    /// Refuses (`TrainError::Changed`) when the base model folder is not the one the run in
    /// `run_dir` started on (its config, weight files' names, sizes and headers).
    pub fn check_base_model(&self, run_dir: &Path) -> Result<(), TrainError> {
        if model_fingerprint(&self.config.base_model)? != self.model_fingerprint {
            return Err(TrainError::Changed {
                run: run_dir.to_path_buf(),
                what: format!("the base model ({})", self.config.base_model.display()),
            });
        }
        Ok(())
    }

    /// Refuses when the dataset is not the one the run started on.
    pub fn check_dataset(&self, run_dir: &Path) -> Result<(), TrainError> {
        if dataset_fingerprint(&self.config.dataset)? != self.dataset_fingerprint {
            return Err(TrainError::Changed {
                run: run_dir.to_path_buf(),
                what: format!("the dataset ({})", self.config.dataset.display()),
            });
        }
        Ok(())
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsLine {
    pub step: u64,
    pub epoch: f64,
    pub loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    pub lr: f64,
    /// The global gradient norm before clipping; `None` on an f16 step skipped because its
    /// gradients overflowed.
    #[serde(default)]
    pub grad_norm: Option<f64>,
    /// f16 runs: the loss scale after the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    pub tokens_per_sec: f64,
    pub elapsed_secs: f64,
    pub eta_secs: f64,
    pub mem_bytes: u64,
    /// GPU memory the process holds (NVIDIA GPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_mem_bytes: Option<u64>,
}

/// `base-eval.json`: the validation loss of the model the run started from, measured before
/// its first step on the same examples every later evaluation uses. For a LoRA run (whose `B`
/// matrices start at zero) that is the base model's held-out loss, what the tuned model is
/// compared with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseEval {
    pub eval_loss: f64,
    /// The validation examples it was measured on.
    pub examples: usize,
}

/// A run folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub const RUN_FILE: &'static str = "run.json";
    pub const METRICS_FILE: &'static str = "metrics.jsonl";
    pub const CHECKPOINTS: &'static str = "checkpoints";
    pub const ADAPTER: &'static str = "adapter";
    pub const BASE_EVAL_FILE: &'static str = "base-eval.json";

    /// The run folder at `path` (not checked).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Whether `path` holds a run (a `run.json`).
    pub fn is_run(path: &Path) -> bool {
        path.join(Self::RUN_FILE).is_file()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The run's id (its folder name).
    pub fn id(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn run_file(&self) -> PathBuf {
        self.path.join(Self::RUN_FILE)
    }

    pub fn metrics_file(&self) -> PathBuf {
        self.path.join(Self::METRICS_FILE)
    }

    pub fn checkpoints_dir(&self) -> PathBuf {
        self.path.join(Self::CHECKPOINTS)
    }

    pub fn adapter_dir(&self) -> PathBuf {
        self.path.join(Self::ADAPTER)
    }

    /// The held-out loss before the first step, if it was measured (a run without validation
    /// examples, or one imported, has none; an unreadable file reads as none).
    pub fn base_eval(&self) -> Option<BaseEval> {
        let bytes = std::fs::read(self.path.join(Self::BASE_EVAL_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes `base-eval.json` (atomically).
    pub(crate) fn write_base_eval(&self, eval: BaseEval) -> Result<(), TrainError> {
        let p = self.path.join(Self::BASE_EVAL_FILE);
        let json = serde_json::to_vec_pretty(&eval).map_err(|e| TrainError::Io {
            path: p.clone(),
            source: e.into(),
        })?;
        doctune_core::write_atomic(&p, &json).map_err(io(&p))
    }

    /// The finished run's PEFT adapter, if it has one.
    pub fn adapter(&self) -> Option<PathBuf> {
        let dir = self.adapter_dir();
        dir.join(doctune_models::adapter::CONFIG_FILE)
            .is_file()
            .then_some(dir)
    }

    /// Reads `run.json`.
    pub fn read(&self) -> Result<RunFile, TrainError> {
        let p = self.run_file();
        let bytes = std::fs::read(&p).map_err(io(&p))?;
        let run: RunFile = serde_json::from_slice(&bytes).map_err(|e| TrainError::Corrupt {
            path: p.clone(),
            message: format!("not a run: {e}"),
        })?;
        if run.schema > RUN_SCHEMA {
            return Err(TrainError::Corrupt {
                path: p,
                message: format!(
                    "written by a newer DocTune (schema {}); update DocTune to open it",
                    run.schema
                ),
            });
        }
        Ok(run)
    }

    /// The checkpoints, oldest first.
    pub fn checkpoints(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(self.checkpoints_dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("step-"))
                            && p.join(STATE_FILE).is_file()
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The step of a checkpoint folder (`step-00000042` → 42).
    pub fn checkpoint_step(checkpoint: &Path) -> Option<u64> {
        checkpoint
            .file_name()?
            .to_str()?
            .strip_prefix("step-")?
            .parse()
            .ok()
    }

    /// The checkpoint of step `step`, if the run has it.
    pub fn checkpoint(&self, step: u64) -> Option<PathBuf> {
        let p = self.checkpoints_dir().join(checkpoint_name(step));
        p.join(STATE_FILE).is_file().then_some(p)
    }

    /// Every line of `metrics.jsonl` (lines that do not parse — a line cut by a crash — are
    /// skipped).
    pub fn history(&self) -> Result<Vec<MetricsLine>, TrainError> {
        let p = self.metrics_file();
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&p)(e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// The last readable line of `metrics.jsonl` (`None` before the first step), read from the
    /// end of the file: the run list asks for it about once a second while a run trains, and a
    /// long run's history is megabytes.
    pub fn last_metrics(&self) -> Result<Option<MetricsLine>, TrainError> {
        use std::io::{Seek, SeekFrom};
        const TAIL: u64 = 64 << 10;
        let p = self.metrics_file();
        let mut f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&p)(e)),
        };
        let len = f.metadata().map_err(io(&p))?.len();
        let start = len.saturating_sub(TAIL);
        f.seek(SeekFrom::Start(start)).map_err(io(&p))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail).map_err(io(&p))?;
        let text = String::from_utf8_lossy(&tail);
        // The first line of a tail may be cut; a line cut by a crash does not parse.
        let whole = if start > 0 {
            text.split_once('\n').map_or("", |(_, rest)| rest)
        } else {
            &text
        };
        let last = whole
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok());
        match last {
            None if start > 0 => Ok(self.history()?.pop()),
            last => Ok(last),
        }
    }

    /// Drops `metrics.jsonl` lines past `step` (a resumed run redoes those steps).
    pub(crate) fn truncate_metrics(&self, step: u64) -> Result<(), TrainError> {
        let path = self.metrics_file();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|l| serde_json::from_str::<MetricsLine>(l).is_ok_and(|m| m.step <= step))
            .map(|l| format!("{l}\n"))
            .collect();
        if kept.len() != text.len() {
            doctune_core::write_atomic(&path, kept.as_bytes()).map_err(io(&path))?;
        }
        Ok(())
    }
}

/// The checkpoints of the run in `run_dir`, oldest first ([`RunDir::checkpoints`]).
pub fn checkpoints(run_dir: &Path) -> Vec<PathBuf> {
    RunDir::at(run_dir).checkpoints()
}

/// What identifies a base model folder: its config and the names, sizes and headers of its
/// weight files (hashing gigabytes of weights on every resume would take minutes).
pub(crate) fn model_fingerprint(dir: &Path) -> Result<String, TrainError> {
    let mut h = Sha256::new();
    let cfg = dir.join("config.json");
    h.update(std::fs::read(&cfg).map_err(io(&cfg))?);
    for f in doctune_models::folder::weight_files(dir)? {
        let meta = std::fs::metadata(&f).map_err(io(&f))?;
        h.update(
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        h.update(meta.len().to_le_bytes());
        let mut head = vec![0u8; 1 << 16];
        let mut file = std::fs::File::open(&f).map_err(io(&f))?;
        let n = file.read(&mut head).map_err(io(&f))?;
        h.update(&head[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// What identifies a dataset: the hash of its `meta.json` and both splits.
pub(crate) fn dataset_fingerprint(dir: &Path) -> Result<String, TrainError> {
    let mut h = Sha256::new();
    for p in DatasetDir::at(dir).files() {
        let mut f = std::fs::File::open(&p).map_err(io(&p))?;
        std::io::copy(&mut f, &mut h).map_err(io(&p))?;
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(step: u64) -> String {
        serde_json::to_string(&MetricsLine {
            step,
            epoch: 0.0,
            loss: 1.0,
            eval_loss: None,
            lr: 0.1,
            grad_norm: Some(1.0),
            loss_scale: None,
            tokens_per_sec: 1.0,
            elapsed_secs: 1.0,
            eta_secs: 1.0,
            mem_bytes: 1,
            gpu_mem_bytes: None,
        })
        .unwrap()
    }

    #[test]
    fn metrics_past_a_checkpoint_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::at(d.path());
        let p = run.metrics_file();
        std::fs::write(&p, format!("{}\n{}\n{}\n", line(1), line(2), line(3))).unwrap();
        run.truncate_metrics(2).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 2);
    }

    #[test]
    fn the_last_metrics_line_is_read_from_the_end_of_a_long_history() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::at(d.path());
        assert!(run.last_metrics().unwrap().is_none());
        // Longer than the tail that is read, so the tail starts inside a line.
        let text: String = (1..=2000).map(|s| line(s) + "\n").collect();
        assert!(text.len() > 64 << 10);
        std::fs::write(run.metrics_file(), &text).unwrap();
        assert_eq!(run.last_metrics().unwrap().map(|m| m.step), Some(2000));
        assert_eq!(
            run.last_metrics().unwrap(),
            run.history().unwrap().pop(),
            "the same line as the whole history's last"
        );
    }

    #[test]
    fn history_skips_a_line_cut_by_a_crash() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::at(d.path());
        let half = &line(3)[..10];
        std::fs::write(
            run.metrics_file(),
            format!("{}\n{}\n{half}", line(1), line(2)),
        )
        .unwrap();
        let steps: Vec<u64> = run.history().unwrap().iter().map(|m| m.step).collect();
        assert_eq!(steps, vec![1, 2]);
        assert_eq!(run.last_metrics().unwrap().map(|m| m.step), Some(2));
        assert!(run.adapter().is_none());
        assert!(run.checkpoints().is_empty());
        assert!(matches!(run.read(), Err(TrainError::Io { .. })));
        std::fs::write(run.run_file(), b"{\"schema\": 1}").unwrap();
        assert!(matches!(run.read(), Err(TrainError::Corrupt { .. })));
    }
}
