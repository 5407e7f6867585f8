//! LoRA training step (forward + backward) throughput: DocTune's candle models against PyTorch +
//! PEFT on the same Llama-style models, the same token ids, the same LoRA (r=8, alpha=16 on
//! q/v) and the same number of threads, in one invocation.
//!
//! ```text
//! DOCTUNE_BENCH_PYTHON=/path/to/venv/bin/python cargo bench -p doctune-models --bench lora_step
//! ```
//! Options (environment): `DOCTUNE_BENCH_THREADS` (default: all cores), `DOCTUNE_BENCH_CONFIGS`
//! (comma list of `tiny`, `20m`, `100m`; default all), `DOCTUNE_BENCH_STEPS` (default 10 for
//! tiny, 3 for the others).
//! Without DOCTUNE_BENCH_PYTHON only the candle side runs.
//!
//! Each side runs in its own process (this binary re-executed as a worker, and `lora_step.py`),
//! so each peak RSS is that side's alone. Both sides print the loss of their first step on the
//! same ids as a check that they compute the same thing.

use doctune_models::{
    causal_lm_loss, load_model, HeapGuard, LoadOptions, LoraSpec, Target, Tensor,
};
use doctune_testkit::bench::{bench_env, bench_threads, peak_rss_bytes, run_json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Bench {
    name: &'static str,
    hidden: usize,
    layers: usize,
    heads: usize,
    intermediate: usize,
    vocab: usize,
    batch: usize,
    seq: usize,
}

const CONFIGS: [Bench; 3] = [
    // The configuration the training-speed issue quotes (4 layers, hidden 256, batch 4 × 128).
    Bench {
        name: "tiny",
        hidden: 256,
        layers: 4,
        heads: 4,
        intermediate: 688,
        vocab: 8192,
        batch: 4,
        seq: 128,
    },
    Bench {
        name: "20m",
        hidden: 512,
        layers: 6,
        heads: 8,
        intermediate: 1408,
        vocab: 8192,
        batch: 2,
        seq: 512,
    },
    Bench {
        name: "100m",
        hidden: 768,
        layers: 12,
        heads: 12,
        intermediate: 2048,
        vocab: 16384,
        batch: 2,
        seq: 512,
    },
];

fn params(b: &Bench) -> u64 {
    let (h, i, v) = (b.hidden as u64, b.intermediate as u64, b.vocab as u64);
    v * h + b.layers as u64 * (4 * h * h + 3 * h * i + 2 * h) + h
}

/// Writes a random Llama-style model folder (tied embeddings) and the token ids both sides use.
fn write_model(b: &Bench, dir: &Path) {
    doctune_testkit::models::write_random_llama(
        dir,
        &doctune_testkit::models::RandomLlama {
            hidden: b.hidden,
            layers: b.layers,
            heads: b.heads,
            kv_heads: b.heads,
            intermediate: b.intermediate,
            vocab: b.vocab,
        },
    )
    .unwrap();
    let mut rng = doctune_models::rng::seeded(42);
    let ids: Vec<Vec<u32>> = (0..b.batch)
        .map(|_| {
            (0..b.seq)
                .map(|_| rand::Rng::random_range(&mut rng, 0..b.vocab as u32))
                .collect()
        })
        .collect();
    std::fs::write(dir.join("ids.json"), serde_json::to_vec(&ids).unwrap()).unwrap();
}

/// The candle side, in this process.
fn worker(dir: &Path, steps: usize, warmup: usize) {
    let ids: Vec<Vec<u32>> =
        serde_json::from_slice(&std::fs::read(dir.join("ids.json")).unwrap()).unwrap();
    let (b, t) = (ids.len(), ids[0].len());
    let flat: Vec<u32> = ids.into_iter().flatten().collect();
    // As the trainer does for a run.
    let _heap = HeapGuard::keep_freed_memory();
    let mut model = load_model(dir, &LoadOptions::default()).unwrap();
    let spec = LoraSpec {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        rslora: false,
    };
    model.add_lora(&[Target::Q, Target::V], &spec, 0).unwrap();
    let input = Tensor::from_vec(flat, (b, t), model.device()).unwrap();
    let mut first_loss = None;
    let mut start = Instant::now();
    let (mut fwd, mut bwd) = (0f64, 0f64);
    for i in 0..warmup + steps {
        if i == warmup {
            start = Instant::now();
            (fwd, bwd) = (0.0, 0.0);
        }
        let t0 = Instant::now();
        let logits = model.forward(&input).unwrap();
        let loss = causal_lm_loss(&logits, &input, None).unwrap();
        let l = loss.to_scalar::<f32>().unwrap();
        let t1 = Instant::now();
        let grads = model.backward(&loss).unwrap();
        drop(grads);
        bwd += t1.elapsed().as_secs_f64();
        fwd += (t1 - t0).as_secs_f64();
        first_loss.get_or_insert(l);
    }
    let dt = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "tokens_per_sec": (b * t * steps) as f64 / dt,
            "step_secs": dt / steps as f64,
            "peak_rss_bytes": peak_rss_bytes(),
            "loss": first_loss,
            "backward_share": bwd / (fwd + bwd),
        })
    );
}

fn main() {
    // As the shells do, before any thread exists.
    doctune_models::cpu::tune_thread_pools();
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--worker") {
        let dir = PathBuf::from(&args[pos + 1]);
        worker(
            &dir,
            args[pos + 2].parse().unwrap(),
            args[pos + 3].parse().unwrap(),
        );
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let threads = bench_threads();
    // Short steps are noisy: the tiny config runs more of them unless told otherwise.
    let steps_env: Option<usize> = bench_env("DOCTUNE_BENCH_STEPS");
    let warmup = 1;
    let wanted = std::env::var("DOCTUNE_BENCH_CONFIGS").unwrap_or_else(|_| "tiny,20m,100m".into());
    let python = std::env::var("DOCTUNE_BENCH_PYTHON").ok();
    let script = Path::new(&crate_dir()).join("benches/lora_step.py");
    let tmp = tempfile::tempdir().unwrap();
    println!("LoRA training step (forward + backward, r=8 alpha=16 on q/v, f32, CPU), {threads} thread(s), timed steps after {warmup} warm-up");
    println!(
        "{:<6} {:>7} {:>9} | {:>10} {:>10} {:>6} | {:>9} {:>9} {:>6} | {:>8} {:>8}",
        "config",
        "params",
        "tokens",
        "candle t/s",
        "torch t/s",
        "ratio",
        "candle MB",
        "torch MB",
        "ratio",
        "loss c",
        "loss t"
    );
    let mut backward = Vec::new();
    for b in CONFIGS
        .iter()
        .filter(|b| wanted.split(',').any(|w| w.trim() == b.name))
    {
        let dir = tmp.path().join(b.name);
        write_model(b, &dir);
        let steps = steps_env.unwrap_or(if b.batch * b.seq <= 512 { 10 } else { 3 });
        let candle = run_json(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--worker",
                    dir.to_str().unwrap(),
                    &steps.to_string(),
                    &warmup.to_string(),
                ])
                .env("RAYON_NUM_THREADS", threads.to_string()),
        );
        let torch = python.as_ref().and_then(|py| {
            run_json(
                Command::new(py)
                    .arg(&script)
                    .args([
                        dir.to_str().unwrap(),
                        &threads.to_string(),
                        &steps.to_string(),
                        &warmup.to_string(),
                    ])
                    .env("OMP_NUM_THREADS", threads.to_string()),
            )
        });
        let f = |v: &Option<serde_json::Value>, k: &str| v.as_ref().and_then(|v| v[k].as_f64());
        if let Some(share) = f(&candle, "backward_share") {
            backward.push(format!("{} {:.0}%", b.name, share * 100.0));
        }
        let (ct, tt) = (f(&candle, "tokens_per_sec"), f(&torch, "tokens_per_sec"));
        let (cm, tm) = (f(&candle, "peak_rss_bytes"), f(&torch, "peak_rss_bytes"));
        let fmt = |x: Option<f64>, scale: f64, prec: usize| {
            x.map_or("-".into(), |x| format!("{:.*}", prec, x / scale))
        };
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        println!(
            "{:<6} {:>6.1}M {:>9} | {:>10} {:>10} {:>6} | {:>9} {:>9} {:>6} | {:>8} {:>8}",
            b.name,
            params(b) as f64 / 1e6,
            format!("{}x{}", b.batch, b.seq),
            fmt(ct, 1.0, 0),
            fmt(tt, 1.0, 0),
            ratio(ct, tt),
            fmt(cm, 1048576.0, 0),
            fmt(tm, 1048576.0, 0),
            ratio(cm, tm),
            fmt(f(&candle, "loss"), 1.0, 4),
            fmt(f(&torch, "loss"), 1.0, 4)
        );
    }
    println!("tokens/s ratio = candle / torch (higher is better for DocTune); memory ratio = candle / torch (lower is better).");
    println!("backward share of DocTune's step: {}", backward.join(", "));
}

/// This crate's folder, read when the test runs (cargo sets it then too): a test binary that
/// cargo reuses from a build in another checkout sharing the target folder must read this
/// checkout's fixtures, not that one's.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
