//! A run's settings: [`RunConfig`] (what `run.json` records), its one set of defaults
//! ([`RunConfig::default`]), the [`Preset`]s scaled to a dataset, and [`RunOverrides`] — the
//! settings a person chose, applied on top of the defaults or a preset by one set of rules
//! that both shells share (the CLI's flags and the Train view's form).

use crate::optim::{LossScaler, Schedule};
use crate::TrainError;
use doctune_models::{DeviceKind, LoraSpec, Precision, Target};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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

impl Method {
    /// LoRA's adapter settings and targets; `None` for full fine-tuning.
    pub fn lora(&self) -> Option<(LoraSpec, &[Target])> {
        match self {
            Method::Lora {
                rank,
                alpha,
                dropout,
                rslora,
                targets,
            } => Some((
                LoraSpec {
                    rank: *rank,
                    alpha: *alpha,
                    dropout: *dropout,
                    rslora: *rslora,
                },
                targets,
            )),
            Method::Full => None,
        }
    }
}

/// Which method, without its settings (what a person picks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MethodKind {
    Lora,
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

impl RunConfig {
    /// Optimiser steps of a run over `train_examples` examples: `max_steps`, else `epochs` ×
    /// ⌈examples / (`micro_batch` × `grad_accum`)⌉, rounded up, at least one (steps take their
    /// examples from the epochs' orders concatenated, so none is short).
    pub fn total_steps(&self, train_examples: usize) -> u64 {
        let per_step = (self.micro_batch * self.grad_accum).max(1);
        let steps_per_epoch = train_examples.div_ceil(per_step) as u64;
        self.max_steps
            .unwrap_or_else(|| ((steps_per_epoch as f64) * self.epochs).ceil().max(1.0) as u64)
    }

    /// The defaults for a model trained from scratch (every weight, from a random start): a
    /// learning rate ten times LoRA's with a warmup, weight decay 0.1, larger batches and
    /// several epochs, as small GPT-style models are trained. Everything else as
    /// [`RunConfig::default`].
    pub fn from_scratch() -> Self {
        Self {
            method: Method::Full,
            epochs: 10.0,
            micro_batch: 8,
            lr: 2e-3,
            warmup_steps: 20,
            weight_decay: 0.1,
            eval_every: Some(50),
            ..Self::default()
        }
    }
}

impl Default for RunConfig {
    /// DocTune's defaults, the one source of them: the CLI's flags, the presets and the
    /// Train view all start here.
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
        if self.device == DeviceKind::Cpu
            && self.precision == Precision::Bf16
            && self.method.lora().is_none()
        {
            return bad("bf16 on the CPU keeps the frozen base weights in bf16 for LoRA; full training trains every weight in f32, so choose f32 (or LoRA)");
        }
        // A forced CPU kernel family the CPU cannot run (`DOCTUNE_CPU_KERNELS`) stops the run
        // here rather than running another family unnoticed.
        doctune_models::cpu::requested().map_err(|e| TrainError::Invalid(e.to_string()))?;
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

impl std::str::FromStr for Preset {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self, TrainError> {
        match s {
            "quick" => Ok(Preset::Quick),
            "balanced" => Ok(Preset::Balanced),
            "thorough" => Ok(Preset::Thorough),
            other => Err(TrainError::Invalid(format!(
                "unknown preset `{other}` (use quick, balanced or thorough)"
            ))),
        }
    }
}

impl Preset {
    /// Every preset, quickest first.
    pub const ALL: [Preset; 3] = [Preset::Quick, Preset::Balanced, Preset::Thorough];

    /// Its name for people.
    pub fn label(self) -> &'static str {
        match self {
            Preset::Quick => "Quick",
            Preset::Balanced => "Balanced",
            Preset::Thorough => "Thorough",
        }
    }

    /// What it does, in a line.
    pub fn description(self) -> &'static str {
        match self {
            Preset::Quick => "one epoch, LoRA rank 8 on q and v: a first look",
            Preset::Balanced => "two epochs, LoRA rank 16 on the attention projections",
            Preset::Thorough => "three epochs, LoRA rank 32 on every projection",
        }
    }

    /// `base` with this preset's method and schedule, for a training split of `examples`.
    pub fn apply(self, base: &RunConfig, examples: usize) -> RunConfig {
        self.apply_with_steps(base, examples, None)
    }

    /// Like [`apply`](Self::apply), for a run of `max_steps` steps when the user chose a step
    /// count instead of the preset's epochs: warmup, evaluation and checkpoint intervals follow
    /// the run's length either way.
    pub fn apply_with_steps(
        self,
        base: &RunConfig,
        examples: usize,
        max_steps: Option<u64>,
    ) -> RunConfig {
        let (epochs, rank, targets) = match self {
            Preset::Quick => (1.0, 8, vec![Target::Q, Target::V]),
            Preset::Balanced => (2.0, 16, vec![Target::Q, Target::K, Target::V, Target::O]),
            Preset::Thorough => (3.0, 32, Target::ALL.to_vec()),
        };
        // Effective batch 16 where the data allows it, else smaller (at least 4 steps an epoch).
        let micro_batch = 4;
        let grad_accum = (examples / (micro_batch * 4)).clamp(1, 4);
        let steps = max_steps.unwrap_or_else(|| {
            ((examples as f64 / (micro_batch * grad_accum) as f64).ceil() * epochs).max(1.0) as u64
        });
        RunConfig {
            method: Method::Lora {
                rank,
                alpha: 2.0 * rank as f64,
                dropout: 0.05,
                rslora: false,
                targets,
            },
            max_steps,
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

/// Settings a person chose, each optional: applied on top of the defaults or a preset by
/// [`RunOverrides::apply`]. The CLI's flags and the Train view's form are both one of these, so
/// the rules below hold in both shells.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunOverrides {
    pub method: Option<MethodKind>,
    pub lora_rank: Option<usize>,
    pub lora_alpha: Option<f64>,
    pub lora_dropout: Option<f32>,
    pub lora_targets: Option<Vec<Target>>,
    pub rslora: Option<bool>,
    pub max_steps: Option<u64>,
    pub epochs: Option<f64>,
    pub micro_batch: Option<usize>,
    pub grad_accum: Option<usize>,
    pub lr: Option<f64>,
    pub warmup_steps: Option<u64>,
    pub schedule: Option<Schedule>,
    pub weight_decay: Option<f64>,
    /// Gradient clipping's norm; 0 or less turns clipping off.
    pub max_grad_norm: Option<f64>,
    pub eval_every: Option<u64>,
    pub checkpoint_every: Option<u64>,
    pub gradient_checkpointing: Option<bool>,
    pub device: Option<DeviceKind>,
    pub precision: Option<Precision>,
    pub seed: Option<u64>,
}

impl RunOverrides {
    /// `base` with every chosen setting in place. Rules: choosing LoRA on a full base starts
    /// from the default LoRA settings; a new rank without an alpha keeps the base's alpha/rank
    /// ratio (so the LoRA scale stays put); a gradient norm of 0 or less means no clipping.
    pub fn apply(&self, base: RunConfig) -> RunConfig {
        let mut c = base;
        let lora_wanted = match self.method {
            Some(MethodKind::Full) => {
                c.method = Method::Full;
                false
            }
            Some(MethodKind::Lora) => true,
            None => matches!(c.method, Method::Lora { .. }),
        };
        if lora_wanted {
            if !matches!(c.method, Method::Lora { .. }) {
                c.method = RunConfig::default().method;
            }
            if let Method::Lora {
                rank,
                alpha,
                dropout,
                rslora,
                targets,
            } = &mut c.method
            {
                if let Some(r) = self.lora_rank {
                    if self.lora_alpha.is_none() && *rank > 0 {
                        *alpha = *alpha / *rank as f64 * r as f64;
                    }
                    *rank = r;
                }
                set(alpha, self.lora_alpha);
                set(dropout, self.lora_dropout);
                set(rslora, self.rslora);
                set(targets, self.lora_targets.clone());
            }
        }
        if self.max_steps.is_some() {
            c.max_steps = self.max_steps;
        }
        set(&mut c.epochs, self.epochs);
        set(&mut c.micro_batch, self.micro_batch);
        set(&mut c.grad_accum, self.grad_accum);
        set(&mut c.lr, self.lr);
        set(&mut c.warmup_steps, self.warmup_steps);
        set(&mut c.schedule, self.schedule);
        set(&mut c.weight_decay, self.weight_decay);
        if let Some(n) = self.max_grad_norm {
            c.max_grad_norm = (n > 0.0).then_some(n);
        }
        if self.eval_every.is_some() {
            c.eval_every = self.eval_every;
        }
        set(&mut c.checkpoint_every, self.checkpoint_every);
        set(&mut c.gradient_checkpointing, self.gradient_checkpointing);
        set(&mut c.device, self.device);
        set(&mut c.precision, self.precision);
        set(&mut c.seed, self.seed);
        c
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_keep_the_lora_scale_and_turn_clipping_off_at_zero() {
        let o = RunOverrides {
            lora_rank: Some(32),
            max_grad_norm: Some(0.0),
            max_steps: Some(7),
            ..Default::default()
        };
        let c = o.apply(RunConfig::default());
        assert_eq!(
            c.method,
            Method::Lora {
                rank: 32,
                alpha: 64.0,
                dropout: 0.05,
                rslora: false,
                targets: vec![Target::Q, Target::V]
            }
        );
        assert_eq!(c.max_grad_norm, None);
        assert_eq!(c.max_steps, Some(7));
        let c = RunOverrides {
            lora_rank: Some(4),
            lora_alpha: Some(4.0),
            ..Default::default()
        }
        .apply(RunConfig::default());
        assert!(matches!(c.method, Method::Lora { rank: 4, alpha, .. } if alpha == 4.0));
        let full = RunOverrides {
            method: Some(MethodKind::Full),
            lora_rank: Some(4),
            ..Default::default()
        }
        .apply(RunConfig::default());
        assert_eq!(full.method, Method::Full);
        let back = RunOverrides {
            method: Some(MethodKind::Lora),
            ..Default::default()
        }
        .apply(full);
        assert_eq!(back.method, RunConfig::default().method);
    }

    #[test]
    fn presets_scale_their_intervals_to_the_run() {
        let p = Preset::Balanced.apply(&RunConfig::default(), 160);
        // 160 examples, effective batch 16: 10 steps an epoch, 2 epochs.
        assert_eq!((p.micro_batch, p.grad_accum), (4, 4));
        assert_eq!((p.eval_every, p.checkpoint_every), (Some(2), 4));
        let q = Preset::Balanced.apply_with_steps(&RunConfig::default(), 160, Some(1000));
        assert_eq!(q.max_steps, Some(1000));
        assert_eq!(
            (q.eval_every, q.checkpoint_every, q.warmup_steps),
            (Some(100), 200, 50)
        );
        assert_eq!("thorough".parse::<Preset>().unwrap(), Preset::Thorough);
        assert!("slow".parse::<Preset>().is_err());
    }
}
