//! DocTune's trainer end to end (data loading, masking, AdamW, clipping and evaluation included)
//! against a PyTorch + PEFT training loop doing the same run, in one invocation: tokens/s in the
//! steady state (steps 2 to N on both sides: PyTorch's first step carries oneDNN's one-time
//! kernel creation, which would flatter DocTune on short runs), peak
//! RSS, the final evaluation loss of both, and DocTune's memory estimate against its measured peak;
//! the achieved GFLOP/s of both against the machine's GEMM peak (PyTorch multiplying one of the
//! model's own shapes, f32 and bf16); and a loss curve (default 50 steps on the tiny config,
//! `DOCTUNE_BENCH_CURVE_STEPS`) from the same initial adapter and the same examples in the same
//! order, whose largest step-by-step difference must stay within 1e-3.
//!
//! ```text
//! DOCTUNE_BENCH_PYTHON=/path/to/venv/bin/python cargo bench -p doctune-train --bench train
//! ```
//! Every config runs on the AVX2 kernel path and, where the CPU has a better one (AVX-512), on
//! that too: DocTune's side through `DOCTUNE_CPU_KERNELS` (see `doctune_models::cpu`),
//! PyTorch's restricted the same way for the AVX2 rows (`ATEN_CPU_CAPABILITY=avx2`,
//! `MKL_ENABLE_INSTRUCTIONS=AVX2`); PyTorch runs with its default attention (SDPA) and with
//! eager attention; the kernels each side ran are printed under the table.
//!
//! Options (environment): `DOCTUNE_BENCH_THREADS` (default: all cores), `DOCTUNE_BENCH_CONFIGS`
//! (`tiny`, `20m`, `20m-256`, `100m`; default all), `DOCTUNE_BENCH_KERNELS` (`avx2`, `avx512`;
//! default both where they differ), `DOCTUNE_BENCH_STEPS` (default 10),
//! `DOCTUNE_BENCH_DEVICE` (`cpu`, `cuda`; default cpu) and `DOCTUNE_BENCH_PRECISION` (`f32`,
//! `bf16`, `f16`; default f32; bf16 on the CPU: DocTune's bf16 base under f32 activations on
//! the AVX-512 BF16 kernel against PyTorch's CPU autocast, and both loss curves against
//! DocTune's f32 curve within 1e-2) — on a GPU both sides run there (PyTorch with its default SDPA
//! attention, f16 with `GradScaler`), memory is the peak GPU memory (ours: NVML's per-process
//! figure; PyTorch's: `max_memory_reserved`), and the estimate is checked against ours. Each
//! side runs in its own process. The data are random token sequences (every token a target), so both eval losses sit
//! near ln(vocab); they must agree within noise, not improve.

use doctune_core::{CancelToken, NullSink};
use doctune_models::cpu::Kernels;
use doctune_models::{DeviceKind, Precision, Target};
use doctune_testkit::bench::{bench_env, bench_threads, peak_rss_bytes, run_json};
use doctune_testkit::models::{write_random_llama, RandomLlama};
use doctune_train::{memory, train, Method, RunConfig};
use std::path::Path;
use std::process::Command;

struct Bench {
    name: &'static str,
    model: RandomLlama,
    seq: usize,
    micro: usize,
}

const CONFIGS: [Bench; 4] = [
    // The training-speed issue's configuration (4 layers, hidden 256, batch 4 × 128).
    Bench {
        name: "tiny",
        model: RandomLlama {
            hidden: 256,
            layers: 4,
            heads: 4,
            kv_heads: 4,
            intermediate: 688,
            vocab: 8192,
        },
        seq: 128,
        micro: 4,
    },
    Bench {
        name: "20m",
        model: RandomLlama {
            hidden: 512,
            layers: 6,
            heads: 8,
            kv_heads: 8,
            intermediate: 1408,
            vocab: 8192,
        },
        seq: 512,
        micro: 2,
    },
    // The AVX2 report's model: the 20M shape with grouped-query attention (8/4), batch 4 × 256.
    Bench {
        name: "20m-256",
        model: RandomLlama {
            hidden: 512,
            layers: 6,
            heads: 8,
            kv_heads: 4,
            intermediate: 1408,
            vocab: 8192,
        },
        seq: 256,
        micro: 4,
    },
    Bench {
        name: "100m",
        model: RandomLlama {
            hidden: 768,
            layers: 12,
            heads: 12,
            kv_heads: 12,
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
        device: bench_device(),
        precision: bench_precision(),
        checkpoint_every: 1_000_000,
        eval_max_examples: 8,
        ..Default::default()
    }
}

/// One training run of config `name` in its own process, as run `run` (default: the config's
/// name), printing its figures as JSON.
fn worker(model: &Path, data: &Path, runs: &Path, name: &str, steps: u64, run: Option<&str>) {
    let b = CONFIGS.iter().find(|b| b.name == name).unwrap();
    let name = run.unwrap_or(name);
    let s = train(
        config(model, data, b, steps),
        runs,
        name,
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(runs.join(name).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let last = lines.last().unwrap();
    // Steady state, as the PyTorch side measures it: steps 2 to N. Every step trains the same
    // number of tokens, so step k's line says k·T tokens took k·T / tokensPerSec_k seconds.
    let tps = |l: &serde_json::Value| l["tokensPerSec"].as_f64().unwrap_or(0.0);
    let n = lines.len() as f64;
    let steady = if lines.len() > 1 {
        (n - 1.0) / (n / tps(last) - 1.0 / tps(&lines[0]))
    } else {
        tps(last)
    };
    let losses: Vec<f64> = lines.iter().filter_map(|l| l["loss"].as_f64()).collect();
    let peak_gpu = lines.iter().filter_map(|l| l["gpuMemBytes"].as_u64()).max();
    println!(
        "{}",
        serde_json::json!({
            "tokens_per_sec": steady, "tokens_per_sec_all": last["tokensPerSec"], "peak_rss_bytes": peak_rss_bytes(), "eval_loss": s.eval_loss,
            "losses": losses, "peak_gpu_bytes": peak_gpu, "kernels": doctune_models::cpu::describe(),
        })
    );
}

fn bench_device() -> DeviceKind {
    bench_env("DOCTUNE_BENCH_DEVICE").unwrap_or_default()
}

fn bench_precision() -> Precision {
    bench_env("DOCTUNE_BENCH_PRECISION").unwrap_or_default()
}

fn main() {
    // As the shells do, before any thread exists.
    doctune_models::cpu::tune_thread_pools();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--worker") {
        worker(
            Path::new(&args[i + 1]),
            Path::new(&args[i + 2]),
            Path::new(&args[i + 3]),
            &args[i + 4],
            args[i + 5].parse().unwrap(),
            args.get(i + 6).map(String::as_str),
        );
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let threads = bench_threads();
    let steps: u64 = bench_env("DOCTUNE_BENCH_STEPS").unwrap_or(10);
    let wanted =
        std::env::var("DOCTUNE_BENCH_CONFIGS").unwrap_or_else(|_| "tiny,20m,20m-256,100m".into());
    let curve_steps: u64 = bench_env("DOCTUNE_BENCH_CURVE_STEPS").unwrap_or(50);
    let python = std::env::var("DOCTUNE_BENCH_PYTHON").ok();
    let script = Path::new(&crate_dir()).join("benches/train.py");
    let tmp = tempfile::tempdir().unwrap();
    let (device, precision) = (bench_device(), bench_precision());
    let on_gpu = device != DeviceKind::Cpu;
    // The kernel paths to measure: AVX2 on every x86 CPU, and the best one where it differs.
    let families: Vec<Kernels> = match std::env::var("DOCTUNE_BENCH_KERNELS") {
        Ok(v) => v
            .split(',')
            .map(|f| match f.trim() {
                "avx512" => Kernels::Avx512,
                _ => Kernels::Avx2,
            })
            .collect(),
        // bf16 on the CPU runs the AVX-512 BF16 kernel only.
        Err(_) if on_gpu || precision == Precision::Bf16 => vec![doctune_models::cpu::best()],
        Err(_) => {
            let mut f = vec![Kernels::Avx2, doctune_models::cpu::best()];
            f.dedup();
            f
        }
    };
    println!(
        "Training run end to end (LoRA r=8 on q/v, AdamW, cosine, clip 1.0, {} {}), {threads} thread(s), {steps} steps (tokens/s over steps 2 to {steps}){}; CPU: {}",
        precision.name(),
        device.name(),
        if on_gpu { "; memory: peak GPU memory" } else { "" },
        doctune_models::cpu::describe_cpu(),
    );
    println!(
        "{:<7} {:<6} {:>8} {:>9} {:>6} {:>9} {:>6} | {:>8} {:>8} {:>6} | {:>8} {:>8} | {:>8} {:>6} | {:>7} {:>7} {:>7}",
        "config",
        "path",
        "ours t/s",
        "sdpa t/s",
        "ratio",
        "eager t/s",
        "ratio",
        "ours MB",
        "sdpa MB",
        "ratio",
        "eval",
        "eval t",
        "est. MB",
        "error",
        "ours GF",
        "f32 pk",
        "bf16 pk"
    );
    let mut kernel_lines = std::collections::BTreeSet::new();
    for b in CONFIGS
        .iter()
        .filter(|b| wanted.split(',').any(|w| w.trim() == b.name))
    {
        let model = tmp.path().join(format!("{}-model", b.name));
        let data = tmp.path().join(format!("{}-data", b.name));
        write_random_llama(&model, &b.model).unwrap();
        write_dataset(&data, b);
        for &family in &families {
            // PyTorch restricted to AVX2 the documented ways for the AVX2 rows (ATen's kernels
            // and MKL's), left to its own choice for the best path.
            let restrict = |c: &mut Command| {
                if family == Kernels::Avx2 && !on_gpu {
                    c.env("ATEN_CPU_CAPABILITY", "avx2")
                        .env("MKL_ENABLE_INSTRUCTIONS", "AVX2");
                }
            };
            let ours = run_json(
                Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--worker",
                        model.to_str().unwrap(),
                        data.to_str().unwrap(),
                        tmp.path().join("runs").to_str().unwrap(),
                        b.name,
                        &steps.to_string(),
                        // One run folder per kernel path.
                        &format!("{}-{}", b.name, family.name()),
                    ])
                    .env("RAYON_NUM_THREADS", threads.to_string())
                    .env(doctune_models::cpu::KERNELS_ENV, family.name()),
            );
            let torch_run = |attn: &str| {
                python.as_ref().and_then(|py| {
                    let mut c = Command::new(py);
                    c.arg(&script)
                        .args([
                            model.to_str().unwrap(),
                            data.to_str().unwrap(),
                            &threads.to_string(),
                            &steps.to_string(),
                            &b.micro.to_string(),
                            &LR.to_string(),
                        ])
                        .env("OMP_NUM_THREADS", threads.to_string())
                        .env("DOCTUNE_BENCH_ATTN", attn);
                    restrict(&mut c);
                    run_json(&mut c)
                })
            };
            let (sdpa, eager) = (torch_run("sdpa"), torch_run("eager"));
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
            let mem = |v: &Option<serde_json::Value>| {
                f(
                    v,
                    if on_gpu {
                        "peak_gpu_bytes"
                    } else {
                        "peak_rss_bytes"
                    },
                )
            };
            let (om, tm) = (mem(&ours), mem(&sdpa));
            let err = om.map_or("-".into(), |m| format!("{:+.0}%", (est - m) / m * 100.0));
            // The machine's GEMM peak on the MLP's up projection of this config.
            let peak = python.as_ref().and_then(|py| {
                let mut c = Command::new(py);
                c.arg(&script)
                    .args(["--gemm", &(b.micro * b.seq).to_string()])
                    .args([b.model.hidden.to_string(), b.model.intermediate.to_string()])
                    .arg(threads.to_string())
                    .env("OMP_NUM_THREADS", threads.to_string());
                restrict(&mut c);
                run_json(&mut c)
            });
            for (side, v) in [
                ("DocTune", &ours),
                ("PyTorch sdpa", &sdpa),
                ("PyTorch eager", &eager),
            ] {
                if let Some(k) = v.as_ref().and_then(|v| v["kernels"].as_str()) {
                    kernel_lines.insert(format!("{} path, {side}: {k}", family.name()));
                }
            }
            let gf = |t: Option<f64>| t.map(|t| t * flops_per_token(b) / 1e9);
            println!(
                "{:<7} {:<6} {:>8} {:>9} {:>6} {:>9} {:>6} | {:>8} {:>8} {:>6} | {:>8} {:>8} | {:>8} {:>6} | {:>7} {:>7} {:>7}",
                b.name,
                family.name(),
                show(f(&ours, "tokens_per_sec"), 1.0, 0),
                show(f(&sdpa, "tokens_per_sec"), 1.0, 0),
                ratio(f(&ours, "tokens_per_sec"), f(&sdpa, "tokens_per_sec")),
                show(f(&eager, "tokens_per_sec"), 1.0, 0),
                ratio(f(&ours, "tokens_per_sec"), f(&eager, "tokens_per_sec")),
                show(om, 1048576.0, 0),
                show(tm, 1048576.0, 0),
                ratio(om, tm),
                show(f(&ours, "eval_loss"), 1.0, 4),
                show(f(&sdpa, "eval_loss"), 1.0, 4),
                format!("{:.0}", est / 1048576.0),
                err,
                show(gf(f(&ours, "tokens_per_sec")), 1.0, 1),
                show(f(&peak, "f32"), 1.0, 1),
                show(f(&peak, "bf16"), 1.0, 1),
            );
        }
    }
    for line in kernel_lines {
        println!("kernels, {line}");
    }
    println!("ratios: DocTune / PyTorch (tokens/s: higher is better; memory (against SDPA): lower). ours GF: model FLOPs (forward, input gradients, attention; LoRA's own negligible) per second; peaks: PyTorch GEMM of the MLP's up projection at this config's tokens per micro-batch, restricted like the row.");
    if curve_steps > 0 {
        curve(
            &CONFIGS[0],
            curve_steps,
            threads,
            python.as_deref(),
            &script,
            tmp.path(),
        );
    }
}

/// Model FLOPs per trained token: forward and input-gradient GEMMs over every projection and the
/// head (2 each per weight), and the two attention products over the causal half, forward and
/// twice in backward.
fn flops_per_token(b: &Bench) -> f64 {
    let m = &b.model;
    let (h, i, v, l) = (
        m.hidden as f64,
        m.intermediate as f64,
        m.vocab as f64,
        m.layers as f64,
    );
    let linear = l * (4.0 * h * h + 3.0 * h * i) + v * h;
    let attention = l * 2.0 * 2.0 * (b.seq as f64 / 2.0) * h;
    4.0 * linear + 3.0 * attention
}

/// The loss curve of both sides from the same initial adapter over the same example order.
fn curve(b: &Bench, steps: u64, threads: usize, python: Option<&str>, script: &Path, tmp: &Path) {
    let model = tmp.join(format!("{}-model", b.name));
    let data = tmp.join(format!("{}-data", b.name));
    if !model.exists() {
        write_random_llama(&model, &b.model).unwrap();
        write_dataset(&data, b);
    }
    let cfg = config(&model, &data, b, steps);
    // The adapter the trainer starts from (the same seeded initialisation), for PEFT to load.
    let adapter = tmp.join("curve-adapter");
    let mut m = doctune_models::load_model(&model, &Default::default()).unwrap();
    let spec = doctune_models::LoraSpec {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        rslora: false,
    };
    m.add_lora(&[Target::Q, Target::V], &spec, cfg.seed)
        .unwrap();
    doctune_models::save_adapter(&m, &adapter, &spec, "bench").unwrap();
    // The trainer's example order: each epoch's seeded shuffle, concatenated.
    let n = 64;
    let needed = steps as usize * b.micro;
    let order: Vec<usize> = (0..needed.div_ceil(n) as u64)
        .flat_map(|e| doctune_train::epoch_order(n, cfg.seed, e))
        .take(needed)
        .collect();
    let order_path = tmp.join("curve-order.json");
    std::fs::write(&order_path, serde_json::to_string(&order).unwrap()).unwrap();
    let runs = tmp.join("curve-runs");
    let ours = run_json(
        Command::new(std::env::current_exe().unwrap())
            .args(["--worker", model.to_str().unwrap(), data.to_str().unwrap()])
            .args([runs.to_str().unwrap(), b.name, &steps.to_string()])
            .env("RAYON_NUM_THREADS", threads.to_string()),
    );
    let torch = python.and_then(|py| {
        run_json(
            Command::new(py)
                .arg(script)
                .args([model.to_str().unwrap(), data.to_str().unwrap()])
                .args([threads.to_string(), steps.to_string(), b.micro.to_string()])
                .arg(LR.to_string())
                .args(["--order", order_path.to_str().unwrap()])
                .args(["--adapter", adapter.to_str().unwrap()])
                .env("OMP_NUM_THREADS", threads.to_string()),
        )
    });
    let losses = |v: &Option<serde_json::Value>| -> Vec<f64> {
        v.as_ref()
            .and_then(|v| v["losses"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|x| x.as_f64())
            .collect()
    };
    let precision = bench_precision();
    let (a, t) = (losses(&ours), losses(&torch));
    if precision == Precision::F32 {
        compare_curves(b, "DocTune / PyTorch", &a, &t, 1e-3);
        return;
    }
    // In half precision the target is the f32 curve: DocTune's own f32 run of the same steps
    // (PyTorch's autocast or half run against it too, for reference).
    let f32_run = run_json(
        Command::new(std::env::current_exe().unwrap())
            .args(["--worker", model.to_str().unwrap(), data.to_str().unwrap()])
            .args([runs.to_str().unwrap(), b.name, &steps.to_string(), "f32"])
            .env("RAYON_NUM_THREADS", threads.to_string())
            .env("DOCTUNE_BENCH_PRECISION", "f32"),
    );
    let f = losses(&f32_run);
    let p = precision.name();
    compare_curves(b, &format!("DocTune {p} / DocTune f32"), &a, &f, 1e-2);
    compare_curves(b, &format!("PyTorch {p} / DocTune f32"), &t, &f, 1e-2);
}

/// Prints the largest step-by-step difference of two loss curves against `target`.
fn compare_curves(b: &Bench, what: &str, a: &[f64], t: &[f64], target: f64) {
    if a.is_empty() || t.is_empty() {
        println!(
            "loss curve ({}, {what}): no comparison (a side did not run)",
            b.name
        );
        return;
    }
    let (worst_at, worst) = a
        .iter()
        .zip(t)
        .map(|(x, y)| (x - y).abs())
        .enumerate()
        .fold((0, 0.0), |m, (i, d)| if d > m.1 { (i, d) } else { m });
    println!(
        "loss curve ({} steps, {}, {what}): first {:.4} / {:.4}, last {:.4} / {:.4}, largest difference {:.2e} at step {} ({} {target:.0e})",
        a.len().min(t.len()),
        b.name,
        a[0],
        t[0],
        a[a.len() - 1],
        t[t.len() - 1],
        worst,
        worst_at + 1,
        if worst <= target { "within" } else { "OVER" }
    );
}

/// This crate's folder, read when the benchmark runs.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
