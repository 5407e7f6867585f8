//! The training loop against PyTorch/transformers goldens and its own promises: accumulation
//! equals a larger batch, a run that stops and resumes ends bit-identical to one that did not,
//! a changed dataset refuses to resume, and training learns.

use candle_core::{DType, Device, Tensor, Var};
use doctune_core::{CancelToken, JobEvent, NullSink, ProgressSink, VecSink};
use doctune_dataset::{BuildOptions, Inputs, Mode};
use doctune_models::{DeviceKind, Precision, Target};
use doctune_train::optim::{lr_multiplier, AdamW, AdamWParams, Schedule};
use doctune_train::{resume, train, Method, RunConfig, RunSummary};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn golden() -> Value {
    let p = Path::new(&crate_dir()).join("tests/fixtures/optim.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn adamw_matches_pytorch() {
    let g = golden();
    let init = &g["init"];
    let a = Var::from_vec(f64s(&init[0]), (3, 4), &Device::Cpu).unwrap();
    let b = Var::from_vec(f64s(&init[1]), 5, &Device::Cpu).unwrap();
    let mut opt = AdamW::new(
        vec![
            ("a.weight".into(), a.clone()),
            ("b.weight".into(), b.clone()),
        ],
        AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        },
    )
    .unwrap();
    for (step, (grads, after)) in g["grads"]
        .as_array()
        .unwrap()
        .iter()
        .zip(g["after"].as_array().unwrap())
        .enumerate()
    {
        let ga = Tensor::from_vec(f64s(&grads[0]), (3, 4), &Device::Cpu).unwrap();
        let gb = Tensor::from_vec(f64s(&grads[1]), 5, &Device::Cpu).unwrap();
        opt.step(&[ga, gb], 1e-2).unwrap();
        for (var, want) in [(&a, &after[0]), (&b, &after[1])] {
            let got: Vec<f64> = var.flatten_all().unwrap().to_vec1().unwrap();
            for (x, y) in got.iter().zip(f64s(want)) {
                assert!((x - y).abs() < 1e-6, "step {}: {x} vs {y}", step + 1);
            }
        }
    }
}

#[test]
fn schedules_match_transformers() {
    let g = golden();
    for (name, s) in [
        ("cosine", Schedule::Cosine),
        ("linear", Schedule::Linear),
        ("constant", Schedule::Constant),
    ] {
        for (step, want) in f64s(&g["schedules"][name]).into_iter().enumerate() {
            let got = lr_multiplier(s, step as u64, 4, 12);
            assert!(
                (got - want).abs() < 1e-12,
                "{name} step {step}: {got} vs {want}"
            );
        }
    }
}

fn model() -> PathBuf {
    PathBuf::from(crate_dir()).join("../doctune-models/tests/fixtures/qwen3")
}

/// A small instruction dataset built with the tiny Qwen3's tokenizer and template.
fn dataset(dir: &Path, rows: usize) -> PathBuf {
    let input = dir.join("qa.jsonl");
    let text: String = (0..rows)
        .map(|i| {
            format!(
                "{{\"instruction\":\"What is {i} plus {i}?\",\"output\":\"It is {}.\"}}\n",
                2 * i
            )
        })
        .collect();
    std::fs::write(&input, text).unwrap();
    let tok = doctune_tokenizer::ModelTokenizer::load(&model()).unwrap();
    let opts = BuildOptions {
        mode: Mode::Instruct,
        seq_len: 64,
        val_fraction: 0.25,
        ..Default::default()
    };
    doctune_dataset::build(
        &dir.join("datasets"),
        "d",
        &model(),
        &tok,
        &Inputs::Files(vec![input]),
        &opts,
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap()
    .dir
}

fn config(ds: &Path) -> RunConfig {
    RunConfig {
        base_model: model(),
        dataset: ds.to_path_buf(),
        method: Method::Lora {
            rank: 4,
            alpha: 8.0,
            dropout: 0.1,
            rslora: false,
            targets: vec![Target::Q, Target::V, Target::Down],
        },
        max_steps: Some(6),
        micro_batch: 2,
        grad_accum: 2,
        lr: 5e-3,
        warmup_steps: 2,
        checkpoint_every: 3,
        eval_every: Some(3),
        weight_decay: 0.01,
        ..Default::default()
    }
}

/// Trains `cfg` as run `name` and cancels it right after its step-`step` checkpoint (the sink
/// cancels when it sees it), as a user's pause or a kill just after a checkpoint would.
fn train_until_checkpoint(cfg: RunConfig, runs: &Path, name: &str, step: u64) -> RunSummary {
    struct StopAt(CancelToken, String);
    impl ProgressSink for StopAt {
        fn emit(&self, e: JobEvent) {
            if matches!(e, JobEvent::Checkpoint { ref path } if path.ends_with(&self.1)) {
                self.0.cancel();
            }
        }
    }
    let cancel = CancelToken::new();
    let sink = StopAt(cancel.clone(), format!("step-{step:08}"));
    train(cfg, runs, name, &sink, &cancel).unwrap()
}

fn adapter_bytes(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap()
}

#[test]
fn a_stopped_and_resumed_run_ends_bit_identical() {
    let d = tempfile::tempdir().unwrap();
    let ds = dataset(d.path(), 24);
    let runs = d.path().join("runs");
    let straight = train(
        config(&ds),
        &runs,
        "straight",
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(straight.steps, 6);
    assert!(!straight.cancelled);

    // Stop right after the step-3 checkpoint (the sink cancels when it sees it).
    let first = train_until_checkpoint(config(&ds), &runs, "stopped", 3);
    assert!(first.cancelled);
    assert_eq!(first.steps, 3);
    let resumed = resume(&runs.join("stopped"), &NullSink, &CancelToken::new()).unwrap();
    assert_eq!(resumed.steps, 6);
    assert_eq!(
        adapter_bytes(&runs.join("straight")),
        adapter_bytes(&runs.join("stopped")),
        "adapters differ"
    );

    // metrics.jsonl: one line per step, in order, no duplicates after the resume.
    let steps: Vec<u64> = std::fs::read_to_string(runs.join("stopped/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);

    // The held-out loss before the first step: measured once (a resume keeps it), and for LoRA
    // (B = 0 at the start) the base model's whatever the seed that drew A.
    let base = straight.base_eval_loss.expect("measured before step 1");
    assert_eq!(first.base_eval_loss, Some(base));
    assert_eq!(resumed.base_eval_loss, Some(base));
    let read = doctune_train::RunDir::at(runs.join("stopped"))
        .base_eval()
        .unwrap();
    assert_eq!(read.eval_loss, base);
    assert!(read.examples > 0);
    let mut other_seed = config(&ds);
    other_seed.seed = 99;
    other_seed.max_steps = Some(1);
    let other = train(other_seed, &runs, "seed99", &NullSink, &CancelToken::new()).unwrap();
    let diff = (other.base_eval_loss.unwrap() - base).abs();
    assert!(diff < 1e-6, "base loss depends on the LoRA init: {diff}");

    // A changed dataset refuses to resume, saying what changed.
    std::fs::write(
        ds.join("train.jsonl"),
        std::fs::read_to_string(ds.join("train.jsonl")).unwrap() + "\n",
    )
    .unwrap();
    let e = resume(&runs.join("stopped"), &NullSink, &CancelToken::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("the dataset") && e.contains("changed"), "{e}");
}

#[test]
fn accumulation_equals_a_larger_batch() {
    let d = tempfile::tempdir().unwrap();
    let ds = dataset(d.path(), 16);
    let runs = d.path().join("runs");
    let mut a = config(&ds);
    a.method = Method::Lora {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        rslora: false,
        targets: vec![Target::Q, Target::V],
    };
    a.max_steps = Some(3);
    a.eval_every = None;
    let mut b = a.clone();
    a.micro_batch = 4;
    a.grad_accum = 1;
    b.micro_batch = 2;
    b.grad_accum = 2;
    train(a, &runs, "a", &NullSink, &CancelToken::new()).unwrap();
    train(b, &runs, "b", &NullSink, &CancelToken::new()).unwrap();
    let load = |run: &str| {
        candle_core::safetensors::load(
            runs.join(run).join("adapter/adapter_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap()
    };
    let (wa, wb) = (load("a"), load("b"));
    for (name, ta) in &wa {
        let diff = doctune_testkit::max_abs_diff(ta, &wb[name]);
        assert!(diff < 1e-5, "{name}: {diff}");
    }
}

#[test]
fn training_learns() {
    let d = tempfile::tempdir().unwrap();
    let ds = dataset(d.path(), 8);
    let mut cfg = config(&ds);
    cfg.max_steps = Some(40);
    cfg.lr = 2e-2;
    cfg.checkpoint_every = 100;
    cfg.eval_every = None;
    cfg.method = Method::Lora {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        rslora: false,
        targets: Target::ALL.to_vec(),
    };
    let runs = d.path().join("runs");
    let s = train(cfg, &runs, "learn", &NullSink, &CancelToken::new()).unwrap();
    let lines: Vec<Value> = std::fs::read_to_string(runs.join("learn/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = lines[0]["loss"].as_f64().unwrap();
    let last = s.final_loss.unwrap();
    assert!(last < first * 0.5, "loss {first} → {last}");
    let (before, after) = (s.base_eval_loss.unwrap(), s.eval_loss.unwrap());
    assert!(after < before, "held-out loss {before} → {after}");
    // Full fine-tuning runs too.
    let mut full = config(&ds);
    full.method = Method::Full;
    full.max_steps = Some(2);
    let s = train(full, &runs, "full", &NullSink, &CancelToken::new()).unwrap();
    assert!(s.output.ends_with("step-00000002"));
}

/// This crate's folder, read when the test runs (cargo sets it then too): a test binary that
/// cargo reuses from a build in another checkout sharing the target folder must read this
/// checkout's fixtures, not that one's.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

#[test]
fn preflight_refuses_what_cannot_fit_and_says_what_would() {
    let d = tempfile::tempdir().unwrap();
    let ds = dataset(d.path(), 8);
    let cfg = config(&ds);
    let est = doctune_train::preflight(&cfg, u64::MAX).unwrap();
    assert!(est.total > est.weights && est.activations > 0);
    let e = doctune_train::preflight(&cfg, est.total - 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("needs about")
            && e.contains("gradient checkpointing")
            && e.contains("accumulation 4"),
        "{e}"
    );
}

#[test]
fn a_run_that_cannot_start_leaves_no_folder() {
    let d = tempfile::tempdir().unwrap();
    let ds = dataset(d.path(), 8);
    let runs = d.path().join("runs");
    let mut cfg = config(&ds);
    cfg.method = Method::Lora {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        rslora: false,
        targets: vec![Target::Q],
    };
    cfg.base_model = d.path().join("no-such-model");
    let e = train(cfg, &runs, "bad", &NullSink, &CancelToken::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-model"), "{e}");
    assert!(!runs.join("bad").exists());
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Mixed precision end to end, in f16 (the half type candle's CPU has; bf16 runs the same code
/// on GPUs without the loss scale): the base model computes in f16, the adapter and AdamW stay
/// f32, the loss scale is recorded per step and carried through checkpoints, so a stopped and
/// resumed f16 run ends bit-identical too.
#[test]
fn half_precision_runs_learn_and_resume_bit_identical() {
    let d = tempfile::tempdir().unwrap();
    let ds = dataset(d.path(), 24);
    let runs = d.path().join("runs");
    let half = |mut c: RunConfig| {
        c.precision = Precision::F16;
        c
    };
    let sink = VecSink::default();
    let straight = train(
        half(config(&ds)),
        &runs,
        "straight",
        &sink,
        &CancelToken::new(),
    )
    .unwrap();
    // f16 on the CPU runs, but the user is told what it costs.
    assert!(sink.events().iter().any(
        |e| matches!(e, JobEvent::Warning { message } if message.contains("several times slower"))
    ));
    assert_eq!(straight.steps, 6);
    let lines = metrics(&runs.join("straight"));
    assert!(lines
        .iter()
        .all(|l| l["lossScale"].as_f64().is_some_and(|s| s > 1.0)));
    let adapter = candle_core::safetensors::load(
        runs.join("straight/adapter/adapter_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(adapter.values().all(|t| t.dtype() == DType::F32));

    let first = train_until_checkpoint(half(config(&ds)), &runs, "stopped", 3);
    assert_eq!(first.steps, 3);
    resume(&runs.join("stopped"), &NullSink, &CancelToken::new()).unwrap();
    assert_eq!(
        adapter_bytes(&runs.join("straight")),
        adapter_bytes(&runs.join("stopped")),
        "f16 adapters differ after resume"
    );

    // It learns, and tracks the f32 run of the same configuration.
    learns_and_tracks_f32(&ds, &runs, Precision::F16);

    // Full fine-tuning in f16 keeps f32 master weights.
    let mut full = half(config(&ds));
    full.method = Method::Full;
    full.max_steps = Some(2);
    let s = train(full, &runs, "full16", &NullSink, &CancelToken::new()).unwrap();
    let w = candle_core::safetensors::load(s.output.join("trainable.safetensors"), &Device::Cpu)
        .unwrap();
    assert!(w.values().all(|t| t.dtype() == DType::F32));
}

/// bf16 on the CPU (where it has AVX-512 BF16; elsewhere the run is refused, which
/// `unsupported_devices_and_precisions_are_refused_before_anything_is_written` checks): the base
/// weights in bf16, LoRA, gradients and AdamW in f32; the run learns, tracks the f32 run of the
/// same configuration, and a stopped run resumes bit-identical.
#[test]
fn bf16_runs_on_the_cpu_learn_track_f32_and_resume_bit_identical() {
    let d = tempfile::tempdir().unwrap();
    let ds = dataset(d.path(), 24);
    let runs = d.path().join("runs");
    let bf16 = |mut c: RunConfig| {
        c.precision = Precision::Bf16;
        c
    };
    if let Err(why) = doctune_models::cpu_bf16() {
        let e = train(
            bf16(config(&ds)),
            &runs,
            "x",
            &NullSink,
            &CancelToken::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(&why.to_string()), "{e}");
        return;
    }
    let straight = train(
        bf16(config(&ds)),
        &runs,
        "straight",
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(straight.steps, 6);
    let adapter = candle_core::safetensors::load(
        runs.join("straight/adapter/adapter_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(adapter.values().all(|t| t.dtype() == DType::F32));
    train_until_checkpoint(bf16(config(&ds)), &runs, "stopped", 3);
    resume(&runs.join("stopped"), &NullSink, &CancelToken::new()).unwrap();
    assert_eq!(
        adapter_bytes(&runs.join("straight")),
        adapter_bytes(&runs.join("stopped")),
        "bf16 adapters differ after resume"
    );

    learns_and_tracks_f32(&ds, &runs, Precision::Bf16);
}

/// A 30-step LoRA run on every projection in `precision` halves its loss and ends within 5 % of
/// the f32 run of the same configuration.
fn learns_and_tracks_f32(ds: &Path, runs: &Path, precision: Precision) {
    let mut cfg = config(ds);
    cfg.max_steps = Some(30);
    cfg.lr = 2e-2;
    cfg.eval_every = None;
    cfg.checkpoint_every = 100;
    cfg.method = Method::Lora {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        rslora: false,
        targets: Target::ALL.to_vec(),
    };
    let p = precision.name();
    let half = RunConfig {
        precision,
        ..cfg.clone()
    };
    let sh = train(
        half,
        runs,
        &format!("learn-{p}"),
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    let s32 = train(
        cfg,
        runs,
        &format!("learn32-{p}"),
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    let first = metrics(&runs.join(format!("learn-{p}")))[0]["loss"]
        .as_f64()
        .unwrap();
    let (lh, l32) = (sh.final_loss.unwrap(), s32.final_loss.unwrap());
    assert!(lh < first * 0.5, "{p} loss {first} → {lh}");
    assert!(
        (lh - l32).abs() < 0.05 * l32.max(0.5),
        "{p} {lh} vs f32 {l32}"
    );
}

/// f16 loss scaling when gradients overflow: starting at 2³⁰ the scaled gradients are inf in
/// f16, so steps are skipped (no update, no gradient norm) and the scale halves until they fit;
/// a run stopped in the middle of that and resumed still ends bit-identical.
#[test]
fn overflowing_f16_steps_are_skipped_and_the_scale_backs_off() {
    let d = tempfile::tempdir().unwrap();
    let ds = dataset(d.path(), 24);
    let runs = d.path().join("runs");
    let cfg = || RunConfig {
        precision: Precision::F16,
        initial_loss_scale: 2f64.powi(30),
        max_steps: Some(24),
        checkpoint_every: 4,
        ..config(&ds)
    };
    train(cfg(), &runs, "straight", &NullSink, &CancelToken::new()).unwrap();
    let lines = metrics(&runs.join("straight"));
    let skipped: Vec<u64> = lines
        .iter()
        .filter(|l| l["gradNorm"].is_null())
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    let scales: Vec<f64> = lines
        .iter()
        .map(|l| l["lossScale"].as_f64().unwrap())
        .collect();
    assert!(
        !skipped.is_empty() && skipped.len() < 20,
        "skipped {skipped:?}"
    );
    // Skips come first; each halves the scale; once it fits, it stays.
    assert_eq!(skipped, (1..=skipped.len() as u64).collect::<Vec<_>>());
    assert_eq!(scales[0], 2f64.powi(29));
    assert_eq!(
        *scales.last().unwrap(),
        2f64.powi(30 - skipped.len() as i32)
    );

    train_until_checkpoint(cfg(), &runs, "stopped", 4);
    resume(&runs.join("stopped"), &NullSink, &CancelToken::new()).unwrap();
    assert_eq!(
        adapter_bytes(&runs.join("straight")),
        adapter_bytes(&runs.join("stopped"))
    );
}

#[test]
fn unsupported_devices_and_precisions_are_refused_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    let ds = dataset(d.path(), 8);
    let runs = d.path().join("runs");
    // bf16 on the CPU needs AVX-512 BF16; where it is missing the run is refused by name.
    if doctune_models::cpu_bf16().is_err() {
        let mut cfg = config(&ds);
        cfg.precision = Precision::Bf16;
        let e = train(cfg, &runs, "bf16", &NullSink, &CancelToken::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("AVX-512 BF16") && e.contains("f32"), "{e}");
    }
    // Full training has no frozen weights to keep in bf16: refused on every CPU.
    let mut cfg = config(&ds);
    cfg.precision = Precision::Bf16;
    cfg.method = Method::Full;
    let e = train(cfg, &runs, "bf16-full", &NullSink, &CancelToken::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bf16") && e.contains("f32"), "{e}");
    if !DeviceKind::Cuda.compiled() {
        let mut cfg = config(&ds);
        cfg.device = DeviceKind::Cuda;
        cfg.precision = Precision::Bf16;
        let e = train(cfg, &runs, "cuda", &NullSink, &CancelToken::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no CUDA support") && e.contains("--features cuda"),
            "{e}"
        );
    }
    assert!(!runs.exists() || std::fs::read_dir(&runs).unwrap().next().is_none());
}

#[test]
fn a_diverging_run_stops_with_the_step_and_a_remedy() {
    let d = tempfile::tempdir().unwrap();
    let ds = dataset(d.path(), 8);
    let runs = d.path().join("runs");
    let mut cfg = config(&ds);
    cfg.lr = 1e30;
    cfg.warmup_steps = 0;
    cfg.max_grad_norm = None;
    cfg.eval_every = None;
    let e = train(cfg, &runs, "nan", &NullSink, &CancelToken::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("training stopped at step") && e.contains("lower learning rate"),
        "{e}"
    );
    // The steps before it were recorded, each with a finite loss.
    let lines = metrics(&runs.join("nan"));
    assert!(!lines.is_empty() && lines.iter().all(|l| l["loss"].as_f64().is_some()));
}
