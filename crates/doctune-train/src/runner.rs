//! The loop itself: [`Runner`] holds a run's model, optimiser, data and state; [`Runner::step`]
//! is one optimiser step (micro-batches, forward, backward, accumulation, clipping, AdamW, the
//! f16 loss scale) and [`Runner::run`] steps to the end with evaluation, metrics, events and
//! checkpoints on schedule.

use crate::checkpoint::State;
use crate::data::{epoch_order, Batch};
use crate::run_dir::{BaseEval, MetricsLine, RunDir};
use crate::{checkpoint, io, optim, RunConfig, RunSummary, TrainError};
use candle_core::{Tensor, Var};
use doctune_core::{CancelToken, JobEvent, ProgressSink, Throttle};
use doctune_dataset::{DatasetDir, Record, Split, SplitReader};
use doctune_models::rng::ModelRng;
use doctune_models::{causal_lm_loss, CausalLm, DeviceKind, LoadOptions, LoraSpec, Precision};
use optim::{AdamW, AdamWParams, LossScaler};
use std::io::Write;
use std::time::Instant;

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

/// What one optimiser step did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepOutcome {
    /// The step's loss (over all its micro-batches).
    pub loss: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// False when an f16 step was skipped because its gradients overflowed.
    pub applied: bool,
    pub lr: f64,
    /// Tokens the step read, padding included.
    pub tokens: u64,
}

/// The mean loss per trained token of `model` over the first `n` examples of `split`, in
/// batches of `micro_batch`; `None` when they hold no trained token.
pub(crate) fn mean_loss(
    model: &CausalLm,
    split: &mut SplitReader,
    n: usize,
    micro_batch: usize,
) -> Result<Option<f64>, TrainError> {
    let (mut sum, mut count) = (0f64, 0f64);
    let mut i = 0;
    while i < n {
        let records: Vec<Record> = (i..(i + micro_batch.max(1)).min(n))
            .map(|k| split.read(k))
            .collect::<Result<_, _>>()?;
        i += records.len();
        let b = Batch::new(&records, model.device())?;
        if b.targets == 0.0 {
            continue;
        }
        let logits = model.forward_eval(&b.ids)?;
        let loss = causal_lm_loss(&logits, &b.ids, Some(&b.mask))?.to_scalar::<f32>()?;
        sum += f64::from(loss) * b.targets;
        count += b.targets;
    }
    Ok((count > 0.0).then(|| sum / count))
}

pub(crate) struct Runner {
    pub run: RunDir,
    pub cfg: RunConfig,
    pub model: CausalLm,
    pub opt: AdamW,
    pub train: SplitReader,
    pub val: SplitReader,
    pub rng: ModelRng,
    pub state: State,
    pub total_steps: u64,
    pub lora: Option<LoraSpec>,
    /// The training order of the current epoch.
    order: Vec<usize>,
    /// NVML, for the GPU memory of CUDA runs.
    gpus: Option<doctune_gpu::Gpus>,
}

impl Runner {
    /// Loads the model (with fresh LoRA matrices, or every weight trainable) and indexes the
    /// dataset; the run starts at step 0 until a checkpoint is restored.
    pub fn open(run: RunDir, cfg: RunConfig) -> Result<Self, TrainError> {
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
        let opts = LoadOptions::for_training(cfg.device.open()?, cfg.precision);
        let mut model = doctune_models::load_model(&cfg.base_model, &opts)?;
        model.set_gradient_checkpointing(cfg.gradient_checkpointing);
        let lora = match cfg.method.lora() {
            Some((spec, targets)) => {
                if model.add_lora(targets, &spec, cfg.seed)? == 0 {
                    return Err(TrainError::Invalid(
                        "no projection matches the LoRA targets".into(),
                    ));
                }
                Some(spec)
            }
            None => {
                model.make_all_trainable()?;
                None
            }
        };
        let opt = AdamW::new(
            model.trainable_vars(),
            AdamWParams {
                weight_decay: cfg.weight_decay,
                ..Default::default()
            },
        )?;
        let dataset = DatasetDir::at(&cfg.dataset);
        let train = dataset.index(Split::Train)?;
        let val = dataset.index(Split::Val)?;
        if train.is_empty() {
            return Err(TrainError::Invalid(format!(
                "{}: the training split is empty",
                cfg.dataset.display()
            )));
        }
        let total_steps = cfg.total_steps(train.len());
        Ok(Self {
            rng: doctune_models::rng::seeded(cfg.seed.wrapping_add(1)),
            state: State {
                loss_scaler: (cfg.precision == Precision::F16).then(|| LossScaler {
                    scale: cfg.initial_loss_scale,
                    ..Default::default()
                }),
                ..State::default()
            },
            order: Vec::new(),
            run,
            cfg,
            model,
            opt,
            train,
            val,
            total_steps,
            lora,
            gpus,
        })
    }

    /// Puts the run back where checkpoint `ckpt` left it.
    pub fn restore(&mut self, ckpt: &std::path::Path) -> Result<(), TrainError> {
        let (state, rng) = checkpoint::restore(ckpt, self.model.device(), &mut self.opt)?;
        self.state = state;
        self.rng = rng;
        Ok(())
    }

    /// GPU memory this process holds, on CUDA runs where NVML reports it.
    fn gpu_memory(&self) -> Option<u64> {
        self.gpus
            .as_ref()?
            .process_memory_bytes(0, std::process::id())
    }

    /// The next micro-batch of the training order (advancing epochs as needed).
    fn next_records(&mut self) -> Result<Vec<Record>, TrainError> {
        let mut out = Vec::with_capacity(self.cfg.micro_batch);
        while out.len() < self.cfg.micro_batch {
            if self.state.position >= self.order.len() {
                if !self.order.is_empty() {
                    self.state.epoch += 1;
                    self.state.position = 0;
                }
                self.order = epoch_order(self.train.len(), self.cfg.seed, self.state.epoch);
            }
            let i = self.order[self.state.position];
            self.state.position += 1;
            out.push(self.train.read(i)?);
        }
        Ok(out)
    }

    /// The mean loss over (up to `eval_max_examples` of) the validation split.
    fn evaluate(&mut self) -> Result<Option<f64>, TrainError> {
        let n = self.val.len().min(self.cfg.eval_max_examples);
        mean_loss(&self.model, &mut self.val, n, self.cfg.micro_batch)
    }

    /// One optimiser step: `grad_accum` micro-batches, the loss masked and normalised over the
    /// whole step (so `k` accumulated micro-batches equal one batch `k` times larger),
    /// gradients summed, unscaled (f16), clipped, then AdamW — or, for an f16 step whose
    /// gradients overflowed, no update and a lower loss scale.
    pub fn step(&mut self, vars: &[Var]) -> Result<StepOutcome, TrainError> {
        let micro: Vec<Vec<Record>> = (0..self.cfg.grad_accum)
            .map(|_| self.next_records())
            .collect::<Result<_, _>>()?;
        let batches: Vec<Batch> = micro
            .iter()
            .map(|r| Batch::new(r, self.model.device()))
            .collect::<Result<_, _>>()?;
        let step_targets: f64 = batches.iter().map(|b| b.targets).sum();
        if step_targets == 0.0 {
            return Err(TrainError::Invalid(
                "a step's examples have no target token".into(),
            ));
        }
        let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut loss_sum = 0f64;
        // f16: the loss is scaled up for the backward pass and the gradients back down.
        let loss_scale = self.state.loss_scaler.as_ref().map_or(1.0, |s| s.scale);
        for b in &batches {
            if b.targets == 0.0 {
                continue;
            }
            let logits = self.model.forward_train(&b.ids, &mut self.rng)?;
            let loss =
                (causal_lm_loss(&logits, &b.ids, Some(&b.mask))? * (b.targets / step_targets))?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?);
            let loss = if loss_scale == 1.0 {
                loss
            } else {
                (loss * loss_scale)?
            };
            let store = self.model.backward(&loss)?;
            for (slot, v) in grads.iter_mut().zip(vars) {
                if let Some(g) = store.get(v) {
                    *slot = Some(match slot.take() {
                        Some(prev) => (prev + g)?,
                        None => g.clone(),
                    });
                }
            }
        }
        let mut grads: Vec<Tensor> = grads
            .into_iter()
            .zip(self.opt.vars())
            .map(|(g, (_, v))| g.map_or_else(|| v.zeros_like(), Ok))
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
        let grad_norm = optim::grad_norm(&grads)?;
        let applied = match &mut self.state.loss_scaler {
            // f16: a step whose gradients overflowed is skipped and the scale lowered.
            Some(scaler) => scaler.update(grad_norm.is_finite()),
            None if grad_norm.is_finite() => true,
            None => {
                return Err(TrainError::Diverged {
                    step: self.state.step + 1,
                    detail: format!(
                        "the gradient norm is {grad_norm}: training diverged; try a lower learning rate"
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
        if applied {
            if let Some(max) = self.cfg.max_grad_norm {
                optim::clip_to(&mut grads, grad_norm, max)?;
            }
            self.opt.step(&grads, lr)?;
        }
        let tokens = batches.iter().map(Batch::tokens).sum::<u64>();
        self.state.step += 1;
        self.state.tokens_seen += tokens;
        Ok(StepOutcome {
            loss: loss_sum,
            grad_norm,
            applied,
            lr,
            tokens,
        })
    }

    /// Steps from the current state to the end (or cancel / early stop), then writes the last
    /// checkpoint and, for a finished LoRA run, the adapter.
    pub fn run(
        &mut self,
        sink: &dyn ProgressSink,
        cancel: &CancelToken,
    ) -> Result<RunSummary, TrainError> {
        for message in self.cfg.warnings() {
            sink.emit(JobEvent::Warning { message });
        }
        // Every step frees and reallocates the same large buffers: keep them in the process.
        let _heap = doctune_models::HeapGuard::keep_freed_memory();
        let metrics_path = self.run.metrics_file();
        self.run.truncate_metrics(self.state.step)?;
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(io(&metrics_path))?;
        self.order = epoch_order(self.train.len(), self.cfg.seed, self.state.epoch);
        let throttle = Throttle::per_second(10);
        let started = Instant::now();
        let start_step = self.state.step;
        let mut tokens_this_session = 0u64;
        // Time spent evaluating: part of the ETA, not of the training throughput.
        let mut eval_secs = 0f64;
        let (mut last_loss, mut last_eval) = (None, None);
        let (mut cancelled, mut early) = (false, false);
        let vars: Vec<Var> = self.opt.vars().iter().map(|(_, v)| v.clone()).collect();
        // Before the first step: the held-out loss of the starting model, for comparison.
        let mut base_eval = self.run.base_eval().map(|b| b.eval_loss);
        if self.state.step == 0 && base_eval.is_none() && !cancel.is_cancelled() {
            let eval_started = Instant::now();
            if let Some(loss) = self.evaluate()? {
                let examples = self.val.len().min(self.cfg.eval_max_examples);
                self.run.write_base_eval(BaseEval {
                    eval_loss: loss,
                    examples,
                })?;
                base_eval = Some(loss);
            }
            eval_secs += eval_started.elapsed().as_secs_f64();
        }
        while self.state.step < self.total_steps {
            if cancel.is_cancelled() {
                cancelled = true;
                break;
            }
            let out = self.step(&vars)?;
            tokens_this_session += out.tokens;
            last_loss = Some(out.loss);

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
                loss: out.loss,
                eval_loss: eval,
                lr: out.lr,
                grad_norm: out.applied.then_some(out.grad_norm),
                loss_scale: self.state.loss_scaler.as_ref().map(|s| s.scale),
                tokens_per_sec: tokens_this_session as f64 / (elapsed - eval_secs).max(1e-9),
                elapsed_secs: elapsed,
                eta_secs: elapsed / done.max(1.0) * (self.total_steps - self.state.step) as f64,
                mem_bytes: rss_bytes(),
                gpu_mem_bytes: self.gpu_memory(),
            };
            let json = serde_json::to_string(&line).map_err(|e| TrainError::Io {
                path: metrics_path.clone(),
                source: e.into(),
            })?;
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
                    base_eval_loss: base_eval,
                });
            }
            if self.state.step.is_multiple_of(self.cfg.checkpoint_every) && !at_end {
                let p = checkpoint::write(
                    &self.run,
                    &mut self.state,
                    &self.opt,
                    &self.rng,
                    self.cfg.keep_checkpoints,
                )?;
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
        let ckpt = checkpoint::write(
            &self.run,
            &mut self.state,
            &self.opt,
            &self.rng,
            self.cfg.keep_checkpoints,
        )?;
        sink.emit(JobEvent::Checkpoint {
            path: ckpt.display().to_string(),
        });
        let output = match &self.lora {
            Some(spec) if !cancelled => {
                let adapter = self.run.adapter_dir();
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
            id: self.run.id(),
            run_dir: self.run.path().to_path_buf(),
            steps: self.state.step,
            total_steps: self.total_steps,
            final_loss: last_loss,
            eval_loss: last_eval,
            eval_perplexity: last_eval.map(f64::exp),
            base_eval_loss: base_eval,
            cancelled,
            early_stopped: early,
            output,
        })
    }
}
