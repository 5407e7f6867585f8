//! DocTune's trainer end to end (data loading, masking, AdamW, clipping and evaluation included)
//! against a PyTorch + PEFT training loop doing the same run, in one invocation: tokens/s, peak
//! RSS, the final evaluation loss of both, and DocTune's memory estimate against its measured peak.
//!
//! ```text
//! DOCTUNE_BENCH_PYTHON=/path/to/venv/bin/python cargo bench -p doctune-train --bench train
//! ```
//! Options (environment): `DOCTUNE_BENCH_THREADS` (default: all cores), `DOCTUNE_BENCH_CONFIGS`
//! (`20m`, `100m`; default both), `DOCTUNE_BENCH_STEPS` (default 6). Each side runs in its own
//! process. The data are random token sequences (every token a target), so both eval losses sit
//! near ln(vocab); they must agree within noise, not improve.

use doctune_core::{CancelToken, NullSink};
use doctune_models::testing::{write_random_llama, RandomLlama};
use doctune_models::Target;
use doctune_train::{memory, train, Method, RunConfig};
use std::path::Path;
use std::process::Command;

struct Bench {
    name: &'static str,
    model: RandomLlama,
    seq: usize,
    micro: usize,
}

const CONFIGS: [Bench; 2] = [
    Bench {
        name: "20m",
        model: RandomLlama {
            hidden: 512,
            layers: 6,
            heads: 8,
            intermediate: 1408,
            vocab: 8192,
        },
        seq: 512,
        micro: 2,
    },
    Bench {
        name: "100m",
        model: RandomLlama {
            hidden: 768,
            layers: 12,
            heads: 12,
            intermediate: 2048,
            vocab: 16384,
        },
        seq: 512,
        micro: 2,
    },
];
const LR: f64 = 1e-3;

fn write_dataset(dir: &Path, b: &Bench) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = doctune_models::rng::seeded(7);
    let line = |rng: &mut doctune_models::rng::ModelRng| {
        let ids: Vec<u32> = (0..b.seq)
            .map(|_| rand::Rng::random_range(rng, 0..b.model.vocab as u32))
            .collect();
        serde_json::json!({ "ids": ids, "mask": vec![1u8; b.seq], "text": "", "spans": [] })
            .to_string()
            + "\n"
    };
    let train: String = (0..64).map(|_| line(&mut rng)).collect();
    let val: String = (0..8).map(|_| line(&mut rng)).collect();
    std::fs::write(dir.join("train.jsonl"), train).unwrap();
    std::fs::write(dir.join("val.jsonl"), val).unwrap();
    let meta = serde_json::json!({"schema": 1, "id": "bench", "createdAt": "", "model": "", "tokenizerSha256": "",
        "options": {"mode": "pretrain", "seqLen": b.seq}, "sources": [], "stats": {}, "badRows": [], "notes": []});
    std::fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
}

fn config(model: &Path, data: &Path, b: &Bench, steps: u64) -> RunConfig {
    RunConfig {
        base_model: model.to_path_buf(),
        dataset: data.to_path_buf(),
        method: Method::Lora {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            rslora: false,
            targets: vec![Target::Q, Target::V],
        },
        max_steps: Some(steps),
        micro_batch: b.micro,
        lr: LR,
        checkpoint_every: 1_000_000,
        eval_max_examples: 8,
        ..Default::default()
    }
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn worker(model: &Path, data: &Path, runs: &Path, name: &str, steps: u64) {
    let b = CONFIGS.iter().find(|b| b.name == name).unwrap();
    let s = train(
        config(model, data, b, steps),
        runs,
        name,
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    let last: serde_json::Value = std::fs::read_to_string(runs.join(name).join("metrics.jsonl"))
        .unwrap()
        .lines()
        .last()
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    println!(
        "{}",
        serde_json::json!({
            "tokens_per_sec": last["tokensPerSec"], "peak_rss_bytes": peak_rss_bytes(), "eval_loss": s.eval_loss,
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--worker") {
        worker(
            Path::new(&args[i + 1]),
            Path::new(&args[i + 2]),
            Path::new(&args[i + 3]),
            &args[i + 4],
            args[i + 5].parse().unwrap(),
        );
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let threads: usize = std::env::var("DOCTUNE_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let steps: u64 = std::env::var("DOCTUNE_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let wanted = std::env::var("DOCTUNE_BENCH_CONFIGS").unwrap_or_else(|_| "20m,100m".into());
    let python = std::env::var("DOCTUNE_BENCH_PYTHON").ok();
    let script = Path::new(&crate_dir()).join("benches/train.py");
    let tmp = tempfile::tempdir().unwrap();
    println!("Training run end to end (LoRA r=8 on q/v, AdamW, cosine, clip 1.0, f32 CPU), {threads} thread(s), {steps} steps");
    println!(
        "{:<5} {:>10} {:>10} {:>6} | {:>9} {:>9} {:>6} | {:>8} {:>8} | {:>11} {:>7}",
        "config",
        "ours t/s",
        "torch t/s",
        "ratio",
        "ours MB",
        "torch MB",
        "ratio",
        "eval",
        "eval t",
        "estimate MB",
        "error"
    );
    for b in CONFIGS
        .iter()
        .filter(|b| wanted.split(',').any(|w| w.trim() == b.name))
    {
        let model = tmp.path().join(format!("{}-model", b.name));
        let data = tmp.path().join(format!("{}-data", b.name));
        write_random_llama(&model, &b.model).unwrap();
        write_dataset(&data, b);
        let run = |cmd: &mut Command| -> Option<serde_json::Value> {
            let o = cmd.output().ok()?;
            if !o.status.success() {
                eprintln!(
                    "  failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
                return None;
            }
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last()?).ok()
        };
        let ours = run(Command::new(std::env::current_exe().unwrap())
            .args([
                "--worker",
                model.to_str().unwrap(),
                data.to_str().unwrap(),
                tmp.path().join("runs").to_str().unwrap(),
                b.name,
                &steps.to_string(),
            ])
            .env("RAYON_NUM_THREADS", threads.to_string()));
        let torch = python.as_ref().and_then(|py| {
            run(Command::new(py)
                .arg(&script)
                .args([
                    model.to_str().unwrap(),
                    data.to_str().unwrap(),
                    &threads.to_string(),
                    &steps.to_string(),
                    &b.micro.to_string(),
                    &LR.to_string(),
                ])
                .env("OMP_NUM_THREADS", threads.to_string()))
        });
        let mcfg = doctune_models::ModelConfig::load(&model).unwrap();
        let est = memory::estimate(&mcfg, &config(&model, &data, b, steps), b.seq).total as f64;
        let f = |v: &Option<serde_json::Value>, k: &str| v.as_ref().and_then(|v| v[k].as_f64());
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        let show = |x: Option<f64>, scale: f64, p: usize| {
            x.map_or("-".into(), |x| format!("{:.*}", p, x / scale))
        };
        let (om, tm) = (f(&ours, "peak_rss_bytes"), f(&torch, "peak_rss_bytes"));
        let err = om.map_or("-".into(), |m| format!("{:+.0}%", (est - m) / m * 100.0));
        println!(
            "{:<5} {:>10} {:>10} {:>6} | {:>9} {:>9} {:>6} | {:>8} {:>8} | {:>11} {:>7}",
            b.name,
            show(f(&ours, "tokens_per_sec"), 1.0, 0),
            show(f(&torch, "tokens_per_sec"), 1.0, 0),
            ratio(f(&ours, "tokens_per_sec"), f(&torch, "tokens_per_sec")),
            show(om, 1048576.0, 0),
            show(tm, 1048576.0, 0),
            ratio(om, tm),
            show(f(&ours, "eval_loss"), 1.0, 4),
            show(f(&torch, "eval_loss"), 1.0, 4),
            format!("{:.0}", est / 1048576.0),
            err
        );
    }
}

/// This crate's folder, read when the benchmark runs.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
