//! The training loop: LoRA or full fine-tuning of a `doctune-models` model on a
//! `doctune-dataset` dataset, live, checkpointed and resumable.
//!
//! [`train`] creates `runs/<id>/` (`run.json`: the configuration and the fingerprints of the
//! base model and dataset) and runs [`RunConfig`]'s steps: micro-batches read from the dataset
//! file a line at a time in a seeded order per epoch, the loss masked by the dataset's mask and
//! normalised by the target tokens of the whole optimiser step (so `k` accumulated micro-batches
//! equal one batch `k` times larger), global gradient-norm clipping, AdamW ([`optim`]) with
//! transformers' schedules, evaluation on the validation split. Every step is appended to
//! `metrics.jsonl`; `Metrics` events go to the sink at most ~10 per second.
//!
//! Checkpoints (`checkpoints/step-NNNNNNNN/`: trainable weights, optimiser moments, and
//! `state.json` with the step, data cursor and generator state) are written to a temporary
//! folder and renamed into place, every `checkpoint_every` steps, at the end and on cancel; the
//! last `keep_checkpoints` are kept. [`resume`] continues from the newest one — bit for bit as if
//! the run had never stopped — and refuses if the base model or dataset changed.

pub mod memory;
pub mod optim;

use candle_core::{Device, Tensor, Var};
use doctune_core::{CancelToken, JobEvent, ProgressSink, Throttle};
use doctune_dataset::Record;
use doctune_models::rng::ModelRng;
use doctune_models::{
    causal_lm_loss, CausalLm, DeviceKind, LoadOptions, LoraSpec, Precision, Target,
};
use optim::{AdamW, AdamWParams, LossScaler, Schedule};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What can go wrong in a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Invalid(String),
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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// LoRA or every weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Method {
    #[serde(rename_all = "camelCase")]
    Lora {
        rank: usize,
        alpha: f64,
        dropout: f32,
        rslora: bool,
        targets: Vec<Target>,
    },
    Full,
}

/// A run's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunConfig {
    pub base_model: PathBuf,
    pub dataset: PathBuf,
    pub method: Method,
    /// Optimiser steps; `None`: `epochs` over the training split.
    pub max_steps: Option<u64>,
    pub epochs: f64,
    pub micro_batch: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    pub schedule: Schedule,
    pub weight_decay: f64,
    /// Global gradient-norm clipping (`None`: off).
    pub max_grad_norm: Option<f64>,
    /// Evaluate every N steps (and at the end); `None`: only at the end.
    pub eval_every: Option<u64>,
    /// Most validation examples used per evaluation.
    pub eval_max_examples: usize,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    /// Stop when the eval loss has not improved for this many evaluations.
    pub early_stop_patience: Option<u32>,
    pub seed: u64,
    pub gradient_checkpointing: bool,
    /// Where the run computes.
    pub device: DeviceKind,
    /// The base weights' and activations' precision; LoRA matrices, fully trained weights,
    /// gradients and optimiser state stay f32 (mixed precision). f16 adds dynamic loss scaling.
    pub precision: Precision,
    /// f16: the loss scale to start from (PyTorch's `GradScaler(init_scale=...)`).
    pub initial_loss_scale: f64,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            base_model: PathBuf::new(),
            dataset: PathBuf::new(),
            method: Method::Lora {
                rank: 8,
                alpha: 16.0,
                dropout: 0.05,
                rslora: false,
                targets: vec![Target::Q, Target::V],
            },
            max_steps: None,
            epochs: 1.0,
            micro_batch: 4,
            grad_accum: 1,
            lr: 2e-4,
            warmup_steps: 0,
            schedule: Schedule::Cosine,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
            eval_every: None,
            eval_max_examples: 256,
            checkpoint_every: 100,
            keep_checkpoints: 3,
            early_stop_patience: None,
            seed: 0,
            gradient_checkpointing: false,
            device: DeviceKind::Cpu,
            precision: Precision::F32,
            initial_loss_scale: LossScaler::INIT,
        }
    }
}

impl RunConfig {
    /// Checks the settings on their own (ranges, the device and precision this build and the
    /// device support), before any file is read.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Invalid(m.into()));
        if self.micro_batch == 0 || self.grad_accum == 0 {
            return bad("micro-batch and gradient accumulation must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("the learning rate must be a positive number");
        }
        if !(self.initial_loss_scale.is_finite() && self.initial_loss_scale >= 1.0) {
            return bad("the initial loss scale must be a number ≥ 1");
        }
        if self.checkpoint_every == 0 {
            return bad("checkpoint interval must be at least 1 step");
        }
        if let Method::Lora { rank, targets, .. } = &self.method {
            if *rank == 0 || targets.is_empty() {
                return bad("LoRA needs a rank ≥ 1 and at least one target");
            }
        }
        self.precision.check(self.device)?;
        if !self.device.compiled() {
            // The same sentence `DeviceKind::open` gives, before anything is loaded.
            self.device.open()?;
        }
        Ok(())
    }

    /// What the user should know about settings that run but cost more than they seem to
    /// (sent as `Warning` events when a run starts or resumes).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.device == DeviceKind::Cpu && self.precision == Precision::F16 {
            out.push("f16 on the CPU runs without DocTune's fused f32 kernels: several times slower than f32, with more activation memory; it only saves memory where the weights dominate".into());
        }
        out
    }
}

/// Ready-made settings by how much time the user wants to spend, scaled to the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Preset {
    /// One epoch, rank 8 on q/v: a first look.
    Quick,
    /// Two epochs, rank 16 on the attention projections.
    Balanced,
    /// Three epochs, rank 32 on every projection.
    Thorough,
}

impl Preset {
    /// `base` with this preset's method and schedule, for a training split of `examples`.
    pub fn apply(self, base: &RunConfig, examples: usize) -> RunConfig {
        let (epochs, rank, targets) = match self {
            Preset::Quick => (1.0, 8, vec![Target::Q, Target::V]),
            Preset::Balanced => (2.0, 16, vec![Target::Q, Target::K, Target::V, Target::O]),
            Preset::Thorough => (3.0, 32, Target::ALL.to_vec()),
        };
        // Effective batch 16 where the data allows it, else smaller (at least 4 steps an epoch).
        let micro_batch = 4;
        let grad_accum = (examples / (micro_batch * 4)).clamp(1, 4);
        let steps =
            ((examples as f64 / (micro_batch * grad_accum) as f64).ceil() * epochs).max(1.0) as u64;
        RunConfig {
            method: Method::Lora {
                rank,
                alpha: 2.0 * rank as f64,
                dropout: 0.05,
                rslora: false,
                targets,
            },
            max_steps: None,
            epochs,
            micro_batch,
            grad_accum,
            lr: 2e-4,
            warmup_steps: (steps / 20).min(100),
            schedule: Schedule::Cosine,
            eval_every: Some((steps / 10).max(1)),
            checkpoint_every: (steps / 5).clamp(1, 500),
            ..base.clone()
        }
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

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub steps: u64,
    pub total_steps: u64,
    pub final_loss: Option<f64>,
    pub eval_loss: Option<f64>,
    /// `exp(eval_loss)`.
    pub eval_perplexity: Option<f64>,
    pub cancelled: bool,
    pub early_stopped: bool,
    /// The PEFT adapter (LoRA) or the newest checkpoint (full).
    pub output: PathBuf,
}

/// `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunFile {
    schema: u32,
    id: String,
    created_at: String,
    config: RunConfig,
    model_fingerprint: String,
    dataset_fingerprint: String,
}

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    step: u64,
    epoch: u64,
    position: usize,
    rng_seed: String,
    rng_word_pos: String,
    best_eval: Option<f64>,
    evals_without_improvement: u32,
    tokens_seen: u64,
    /// f16 runs: the loss scale, carried across checkpoints so a resumed run continues exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loss_scaler: Option<LossScaler>,
}

/// What identifies a base model folder: its config and the names, sizes and headers of its
/// weight files (hashing gigabytes of weights on every resume would take minutes).
fn model_fingerprint(dir: &Path) -> Result<String, TrainError> {
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

/// What identifies a dataset: its `meta.json` and the size and hash of its training split.
fn dataset_fingerprint(dir: &Path) -> Result<String, TrainError> {
    let mut h = Sha256::new();
    for name in ["meta.json", "train.jsonl", "val.jsonl"] {
        let p = dir.join(name);
        let mut f = std::fs::File::open(&p).map_err(io(&p))?;
        std::io::copy(&mut f, &mut h).map_err(io(&p))?;
    }
    Ok(hex::encode(h.finalize()))
}

/// A dataset split indexed by line offsets; examples are read on demand.
struct Split {
    path: PathBuf,
    offsets: Vec<u64>,
    file: BufReader<std::fs::File>,
}

impl Split {
    fn open(path: PathBuf) -> Result<Self, TrainError> {
        let f = std::fs::File::open(&path).map_err(io(&path))?;
        let mut reader = BufReader::new(f);
        let mut offsets = Vec::new();
        let mut pos = 0u64;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io(&path))?;
            if n == 0 {
                break;
            }
            if line.iter().any(|b| !b.is_ascii_whitespace()) {
                offsets.push(pos);
            }
            pos += n as u64;
        }
        Ok(Self {
            file: reader,
            offsets,
            path,
        })
    }

    fn len(&self) -> usize {
        self.offsets.len()
    }

    fn read(&mut self, i: usize) -> Result<Record, TrainError> {
        self.file
            .seek(SeekFrom::Start(self.offsets[i]))
            .map_err(io(&self.path))?;
        let mut line = String::new();
        self.file.read_line(&mut line).map_err(io(&self.path))?;
        serde_json::from_str(&line).map_err(|e| {
            TrainError::Invalid(format!(
                "{}: example {}: not a dataset record: {e}",
                self.path.display(),
                i + 1
            ))
        })
    }
}

/// The order of the training examples in `epoch`: a seeded shuffle (the same on every run).
/// Micro-batches take examples from the concatenation of the epochs' orders.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
    order
}

/// A padded micro-batch: ids [B, L] and target mask [B, L].
fn batch(records: &[Record], device: &Device) -> Result<(Tensor, Tensor, f64), TrainError> {
    let len = records.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    let mut ids = vec![0u32; records.len() * len];
    let mut mask = vec![0f32; records.len() * len];
    let mut targets = 0f64;
    for (b, r) in records.iter().enumerate() {
        ids[b * len..b * len + r.ids.len()].copy_from_slice(&r.ids);
        for (t, &m) in r.mask.iter().enumerate() {
            mask[b * len + t] = f32::from(m);
            // Position 0 predicts nothing.
            if t > 0 && m == 1 {
                targets += 1.0;
            }
        }
    }
    Ok((
        Tensor::from_vec(ids, (records.len(), len), device)?,
        Tensor::from_vec(mask, (records.len(), len), device)?,
        targets,
    ))
}

/// Process memory in use (resident set), where the OS tells.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

struct Runner {
    dir: PathBuf,
    cfg: RunConfig,
    model: CausalLm,
    opt: AdamW,
    train: Split,
    val: Split,
    rng: ModelRng,
    state: State,
    total_steps: u64,
    spec: Option<(LoraSpec, Vec<Target>)>,
    /// NVML, for the GPU memory of CUDA runs.
    gpus: Option<doctune_gpu::Gpus>,
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Runner {
    fn open(dir: PathBuf, cfg: RunConfig) -> Result<Self, TrainError> {
        let gpus = (cfg.device == DeviceKind::Cuda).then(doctune_gpu::Gpus::init);
        if let (Some(g), Precision::Bf16) = (&gpus, cfg.precision) {
            if let Some(gpu) = g.list().first() {
                if let Some([major, minor]) = gpu.compute_capability.filter(|c| c[0] < 8) {
                    return Err(TrainError::Invalid(format!(
                        "bf16 needs an NVIDIA GPU of compute capability 8.0 (Ampere) or newer; {} is {major}.{minor}: train in f16 or f32",
                        gpu.name
                    )));
                }
            }
        }
        let opts = LoadOptions {
            device: cfg.device.open()?,
            dtype: Some(cfg.precision.dtype()),
        };
        let mut model = doctune_models::load_model(&cfg.base_model, &opts)?;
        model.set_gradient_checkpointing(cfg.gradient_checkpointing);
        let spec = match &cfg.method {
            Method::Lora {
                rank,
                alpha,
                dropout,
                rslora,
                targets,
            } => {
                let spec = LoraSpec {
                    rank: *rank,
                    alpha: *alpha,
                    dropout: *dropout,
                    rslora: *rslora,
                };
                let n = model.add_lora(targets, &spec, cfg.seed)?;
                if n == 0 {
                    return Err(TrainError::Invalid(
                        "no projection matches the LoRA targets".into(),
                    ));
                }
                Some((spec, targets.clone()))
            }
            Method::Full => {
                model.make_all_trainable()?;
                None
            }
        };
        let vars = model.trainable_vars();
        let opt = AdamW::new(
            vars,
            AdamWParams {
                weight_decay: cfg.weight_decay,
                ..Default::default()
            },
        )?;
        let train = Split::open(cfg.dataset.join("train.jsonl"))?;
        let val = Split::open(cfg.dataset.join("val.jsonl"))?;
        if train.len() == 0 {
            return Err(TrainError::Invalid(format!(
                "{}: the training split is empty",
                cfg.dataset.display()
            )));
        }
        let per_step = cfg.micro_batch * cfg.grad_accum;
        let steps_per_epoch = train.len().div_ceil(per_step) as u64;
        let total_steps = cfg
            .max_steps
            .unwrap_or_else(|| ((steps_per_epoch as f64) * cfg.epochs).ceil().max(1.0) as u64);
        Ok(Self {
            rng: doctune_models::rng::seeded(cfg.seed.wrapping_add(1)),
            state: State {
                step: 0,
                epoch: 0,
                position: 0,
                rng_seed: String::new(),
                rng_word_pos: String::new(),
                best_eval: None,
                evals_without_improvement: 0,
                tokens_seen: 0,
                loss_scaler: (cfg.precision == Precision::F16).then(|| LossScaler {
                    scale: cfg.initial_loss_scale,
                    ..Default::default()
                }),
            },
            dir,
            cfg,
            model,
            opt,
            train,
            val,
            total_steps,
            spec,
            gpus,
        })
    }

    /// GPU memory this process holds, on CUDA runs where NVML reports it.
    fn gpu_memory(&self) -> Option<u64> {
        self.gpus
            .as_ref()?
            .process_memory_bytes(0, std::process::id())
    }

    /// The next micro-batch of the training order (advancing epochs as needed).
    fn next_records(&mut self, order: &mut Vec<usize>) -> Result<Vec<Record>, TrainError> {
        let mut out = Vec::with_capacity(self.cfg.micro_batch);
        while out.len() < self.cfg.micro_batch {
            if self.state.position >= order.len() {
                self.state.epoch += 1;
                self.state.position = 0;
                *order = epoch_order(self.train.len(), self.cfg.seed, self.state.epoch);
            }
            let i = order[self.state.position];
            self.state.position += 1;
            out.push(self.train.read(i)?);
        }
        Ok(out)
    }

    fn evaluate(&mut self) -> Result<Option<f64>, TrainError> {
        let n = self.val.len().min(self.cfg.eval_max_examples);
        if n == 0 {
            return Ok(None);
        }
        let (mut sum, mut count) = (0f64, 0f64);
        let mut i = 0;
        while i < n {
            let records: Vec<Record> = (i..(i + self.cfg.micro_batch).min(n))
                .map(|k| self.val.read(k))
                .collect::<Result<_, _>>()?;
            i += records.len();
            let (ids, mask, targets) = batch(&records, self.model.device())?;
            if targets == 0.0 {
                continue;
            }
            let logits = self.model.forward_eval(&ids)?;
            let loss = causal_lm_loss(&logits, &ids, Some(&mask))?.to_scalar::<f32>()?;
            sum += f64::from(loss) * targets;
            count += targets;
        }
        Ok((count > 0.0).then(|| sum / count))
    }

    fn checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        let dir = self.dir.join("checkpoints");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let name = format!("step-{:08}", self.state.step);
        let dest = dir.join(&name);
        if dest.exists() {
            return Ok(dest);
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}-"))
            .tempdir_in(&dir)
            .map_err(io(&dir))?;
        let weights: Vec<(String, Tensor)> = self
            .opt
            .vars()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_detached_tensor()))
            .collect();
        doctune_models::save_safetensors(&tmp.path().join("trainable.safetensors"), &weights)?;
        doctune_models::save_safetensors(
            &tmp.path().join("optimizer.safetensors"),
            &self.opt.state(),
        )?;
        self.state.rng_seed = hex::encode(self.rng.get_seed());
        self.state.rng_word_pos = self.rng.get_word_pos().to_string();
        let state_path = tmp.path().join("state.json");
        doctune_core::write_json_atomic(&state_path, &self.state).map_err(io(&state_path))?;
        let kept = tmp.keep();
        std::fs::rename(&kept, &dest).map_err(io(&dest))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        // Keep the newest `keep_checkpoints`.
        let mut all = checkpoints(&self.dir);
        while all.len() > self.cfg.keep_checkpoints.max(1) {
            let old = all.remove(0);
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(dest)
    }

    fn restore(&mut self, ckpt: &Path) -> Result<(), TrainError> {
        let state_path = ckpt.join("state.json");
        let state: State =
            serde_json::from_slice(&std::fs::read(&state_path).map_err(io(&state_path))?)
                .map_err(|e| TrainError::Invalid(format!("{}: {e}", state_path.display())))?;
        let weights = candle_core::safetensors::load(
            ckpt.join("trainable.safetensors"),
            self.model.device(),
        )?;
        for (name, var) in self.opt.vars() {
            let t = weights.get(name).ok_or_else(|| {
                TrainError::Invalid(format!("{}: no weight {name}", ckpt.display()))
            })?;
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        let moments = candle_core::safetensors::load(
            ckpt.join("optimizer.safetensors"),
            self.model.device(),
        )?;
        // The optimiser counts the steps it applied (f16 runs skip overflowed ones).
        let applied = state.step - state.loss_scaler.as_ref().map_or(0, |s| s.skipped);
        self.opt.load_state(|n| moments.get(n).cloned(), applied)?;
        let seed: [u8; 32] = hex::decode(&state.rng_seed)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                TrainError::Invalid(format!("{}: bad generator state", state_path.display()))
            })?;
        self.rng = ModelRng::from_seed(seed);
        self.rng
            .set_word_pos(state.rng_word_pos.parse().unwrap_or(0));
        self.state = state;
        Ok(())
    }

    /// Runs from the current state to the end (or cancel / early stop).
    fn run(
        &mut self,
        sink: &dyn ProgressSink,
        cancel: &CancelToken,
    ) -> Result<RunSummary, TrainError> {
        for message in self.cfg.warnings() {
            sink.emit(JobEvent::Warning { message });
        }
        // Every step frees and reallocates the same large buffers: keep them in the process.
        let _heap = doctune_models::HeapGuard::keep_freed_memory();
        let metrics_path = self.dir.join("metrics.jsonl");
        truncate_metrics(&metrics_path, self.state.step)?;
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(io(&metrics_path))?;
        let mut order = epoch_order(self.train.len(), self.cfg.seed, self.state.epoch);
        let throttle = Throttle::per_second(10);
        let started = Instant::now();
        let start_step = self.state.step;
        let mut tokens_this_session = 0u64;
        // Time spent evaluating: part of the ETA, not of the training throughput.
        let mut eval_secs = 0f64;
        let (mut last_loss, mut last_eval) = (None, None);
        let (mut cancelled, mut early) = (false, false);
        let vars: Vec<Var> = self.opt.vars().iter().map(|(_, v)| v.clone()).collect();
        while self.state.step < self.total_steps {
            if cancel.is_cancelled() {
                cancelled = true;
                break;
            }
            let micro: Vec<Vec<Record>> = (0..self.cfg.grad_accum)
                .map(|_| self.next_records(&mut order))
                .collect::<Result<_, _>>()?;
            let batches: Vec<(Tensor, Tensor, f64)> = micro
                .iter()
                .map(|r| batch(r, self.model.device()))
                .collect::<Result<_, _>>()?;
            let step_targets: f64 = batches.iter().map(|b| b.2).sum();
            if step_targets == 0.0 {
                return Err(TrainError::Invalid(
                    "a step's examples have no target token".into(),
                ));
            }
            let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
            let mut loss_sum = 0f64;
            // f16: the loss is scaled up for the backward pass and the gradients back down.
            let loss_scale = self.state.loss_scaler.as_ref().map_or(1.0, |s| s.scale);
            for (ids, mask, targets) in &batches {
                if *targets == 0.0 {
                    continue;
                }
                let logits = self.model.forward_train(ids, &mut self.rng)?;
                let loss = (causal_lm_loss(&logits, ids, Some(mask))? * (targets / step_targets))?;
                loss_sum += f64::from(loss.to_scalar::<f32>()?);
                let loss = if loss_scale == 1.0 {
                    loss
                } else {
                    (loss * loss_scale)?
                };
                let store = self.model.backward(&loss)?;
                for (slot, v) in grads.iter_mut().zip(&vars) {
                    if let Some(g) = store.get(v) {
                        *slot = Some(match slot.take() {
                            Some(prev) => (prev + g)?,
                            None => g.clone(),
                        });
                    }
                }
                tokens_this_session += ids.elem_count() as u64;
            }
            let mut grads: Vec<Tensor> = grads
                .into_iter()
                .zip(self.opt.vars())
                .map(|(g, (n, v))| {
                    g.map_or_else(|| v.zeros_like(), Ok)
                        .map_err(|e| TrainError::Invalid(format!("{n}: {e}")))
                })
                .collect::<Result<_, _>>()?;
            if loss_scale != 1.0 {
                for g in grads.iter_mut() {
                    *g = (&*g * (1.0 / loss_scale))?;
                }
            }
            if !loss_sum.is_finite() {
                return Err(TrainError::Diverged {
                    step: self.state.step + 1,
                    detail: match self.cfg.precision {
                        Precision::F16 => format!(
                            "the loss is {loss_sum}: this model's activations overflow f16; train in bf16 (on a GPU) or f32"
                        ),
                        _ => format!(
                            "the loss is {loss_sum}: training diverged; try a lower learning rate or gradient clipping"
                        ),
                    },
                });
            }
            let gnorm = optim::grad_norm(&grads)?;
            let apply = match &mut self.state.loss_scaler {
                // f16: a step whose gradients overflowed is skipped and the scale lowered.
                Some(scaler) => scaler.update(gnorm.is_finite()),
                None if gnorm.is_finite() => true,
                None => {
                    return Err(TrainError::Diverged {
                        step: self.state.step + 1,
                        detail: format!(
                            "the gradient norm is {gnorm}: training diverged; try a lower learning rate"
                        ),
                    })
                }
            };
            let lr = self.cfg.lr
                * optim::lr_multiplier(
                    self.cfg.schedule,
                    self.state.step,
                    self.cfg.warmup_steps,
                    self.total_steps,
                );
            if apply {
                if let Some(max) = self.cfg.max_grad_norm {
                    optim::clip_to(&mut grads, gnorm, max)?;
                }
                self.opt.step(&grads, lr)?;
            }
            self.state.step += 1;
            self.state.tokens_seen += batches.iter().map(|b| b.0.elem_count() as u64).sum::<u64>();
            last_loss = Some(loss_sum);

            let at_end = self.state.step == self.total_steps;
            let eval_now = at_end
                || self
                    .cfg
                    .eval_every
                    .is_some_and(|n| self.state.step.is_multiple_of(n));
            let eval_started = Instant::now();
            let eval = if eval_now { self.evaluate()? } else { None };
            eval_secs += eval_started.elapsed().as_secs_f64();
            if let Some(e) = eval {
                last_eval = Some(e);
                if self.state.best_eval.is_none_or(|b| e < b) {
                    self.state.best_eval = Some(e);
                    self.state.evals_without_improvement = 0;
                } else {
                    self.state.evals_without_improvement += 1;
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            let done = (self.state.step - start_step) as f64;
            let line = MetricsLine {
                step: self.state.step,
                epoch: self.state.epoch as f64
                    + self.state.position as f64 / self.train.len().max(1) as f64,
                loss: loss_sum,
                eval_loss: eval,
                lr,
                grad_norm: apply.then_some(gnorm),
                loss_scale: self.state.loss_scaler.as_ref().map(|s| s.scale),
                tokens_per_sec: tokens_this_session as f64 / (elapsed - eval_secs).max(1e-9),
                elapsed_secs: elapsed,
                eta_secs: elapsed / done.max(1.0) * (self.total_steps - self.state.step) as f64,
                mem_bytes: rss_bytes(),
                gpu_mem_bytes: self.gpu_memory(),
            };
            let json =
                serde_json::to_string(&line).map_err(|e| TrainError::Invalid(e.to_string()))?;
            writeln!(metrics, "{json}").map_err(io(&metrics_path))?;
            if eval.is_some() || at_end || throttle.ready() {
                sink.emit(JobEvent::Metrics {
                    step: line.step,
                    epoch: line.epoch,
                    loss: line.loss,
                    eval_loss: line.eval_loss,
                    lr: line.lr,
                    grad_norm: line.grad_norm,
                    tokens_per_sec: line.tokens_per_sec,
                    elapsed_secs: line.elapsed_secs,
                    eta_secs: line.eta_secs,
                    mem_bytes: Some(line.mem_bytes),
                    gpu_mem_bytes: line.gpu_mem_bytes,
                });
            }
            if self.state.step.is_multiple_of(self.cfg.checkpoint_every) && !at_end {
                let p = self.checkpoint()?;
                sink.emit(JobEvent::Checkpoint {
                    path: p.display().to_string(),
                });
            }
            if self
                .cfg
                .early_stop_patience
                .is_some_and(|p| self.state.evals_without_improvement >= p)
            {
                early = true;
                break;
            }
        }
        metrics.sync_all().map_err(io(&metrics_path))?;
        let ckpt = self.checkpoint()?;
        sink.emit(JobEvent::Checkpoint {
            path: ckpt.display().to_string(),
        });
        let output = match &self.spec {
            Some((spec, _)) if !cancelled => {
                let adapter = self.dir.join("adapter");
                doctune_models::save_adapter(
                    &self.model,
                    &adapter,
                    spec,
                    &self.cfg.base_model.display().to_string(),
                )?;
                adapter
            }
            _ => ckpt,
        };
        Ok(RunSummary {
            run_dir: self.dir.clone(),
            steps: self.state.step,
            total_steps: self.total_steps,
            final_loss: last_loss,
            eval_loss: last_eval,
            eval_perplexity: last_eval.map(f64::exp),
            cancelled,
            early_stopped: early,
            output,
        })
    }
}

/// The checkpoints of a run, oldest first.
pub fn checkpoints(run_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(run_dir.join("checkpoints"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("step-"))
                        && p.join("state.json").is_file()
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Drops `metrics.jsonl` lines past `step` (a resumed run redoes those steps).
fn truncate_metrics(path: &Path, step: u64) -> Result<(), TrainError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<MetricsLine>(l).is_ok_and(|m| m.step <= step))
        .map(|l| format!("{l}\n"))
        .collect();
    if kept.len() != text.len() {
        doctune_core::write_atomic(path, kept.as_bytes()).map_err(io(path))?;
    }
    Ok(())
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
    let dir = runs_dir.join(id);
    if dir.exists() {
        return Err(TrainError::Invalid(format!(
            "{} already exists",
            dir.display()
        )));
    }
    let run = RunFile {
        schema: 1,
        id: id.to_string(),
        created_at: now(),
        model_fingerprint: model_fingerprint(&cfg.base_model)?,
        dataset_fingerprint: dataset_fingerprint(&cfg.dataset)?,
        config: cfg.clone(),
    };
    // Load and check everything before the run folder exists: a configuration that cannot run
    // leaves nothing behind.
    let mut runner = Runner::open(dir.clone(), cfg)?;
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let run_path = dir.join("run.json");
    doctune_core::write_json_atomic(&run_path, &run).map_err(io(&run_path))?;
    runner.run(sink, cancel)
}

/// Continues the run in `run_dir` from its newest checkpoint (or from the start if it has none).
pub fn resume(
    run_dir: &Path,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<RunSummary, TrainError> {
    let run_path = run_dir.join("run.json");
    let run: RunFile = serde_json::from_slice(&std::fs::read(&run_path).map_err(io(&run_path))?)
        .map_err(|e| TrainError::Invalid(format!("{}: not a run: {e}", run_path.display())))?;
    if model_fingerprint(&run.config.base_model)? != run.model_fingerprint {
        return Err(TrainError::Changed {
            run: run_dir.to_path_buf(),
            what: format!("the base model ({})", run.config.base_model.display()),
        });
    }
    if dataset_fingerprint(&run.config.dataset)? != run.dataset_fingerprint {
        return Err(TrainError::Changed {
            run: run_dir.to_path_buf(),
            what: format!("the dataset ({})", run.config.dataset.display()),
        });
    }
    run.config.validate()?;
    let mut runner = Runner::open(run_dir.to_path_buf(), run.config)?;
    if let Some(ckpt) = checkpoints(run_dir).pop() {
        runner.restore(&ckpt)?;
    }
    runner.run(sink, cancel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_orders_are_seeded_permutations() {
        let a = epoch_order(50, 7, 0);
        assert_eq!(a, epoch_order(50, 7, 0));
        assert_ne!(a, epoch_order(50, 7, 1));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn batches_pad_right_and_count_targets() {
        let r = |ids: Vec<u32>, mask: Vec<u8>| Record {
            ids,
            mask,
            text: String::new(),
            spans: vec![],
        };
        let (ids, mask, targets) = batch(
            &[r(vec![5, 6, 7], vec![0, 1, 1]), r(vec![8], vec![1])],
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            ids.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 7], vec![8, 0, 0]]
        );
        assert_eq!(
            mask.to_vec2::<f32>().unwrap(),
            vec![vec![0.0, 1.0, 1.0], vec![1.0, 0.0, 0.0]]
        );
        // Position 0 predicts nothing: 2 targets, not 3.
        assert_eq!(targets, 2.0);
    }

    #[test]
    fn metrics_past_a_checkpoint_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.jsonl");
        let line = |step: u64| {
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
        };
        std::fs::write(&p, format!("{}\n{}\n{}\n", line(1), line(2), line(3))).unwrap();
        truncate_metrics(&p, 2).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 2);
    }
}
