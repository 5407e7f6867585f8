//! Plain f32 GEMMs of every projection shape of the training benchmarks' configs, DocTune's CPU
//! matmul against PyTorch's (`gemm.py`) on the same shapes and threads, in one invocation: the
//! microbenchmark that says whether a training step's gap is its GEMMs.
//!
//! ```text
//! DOCTUNE_BENCH_PYTHON=/path/to/venv/bin/python cargo bench -p doctune-models --bench gemm
//! ```
//! Each shape is timed twice per side: `x·Wᵀ` (a projection's forward, `W` stored [out, in] as
//! in a model file) and `g·W` (its input gradient). Options (environment):
//! `DOCTUNE_BENCH_THREADS` (default: all cores), `DOCTUNE_BENCH_CONFIGS` (`tiny`, `20m`,
//! `20m-gqa`, `100m`; default all), `DOCTUNE_BENCH_DTYPE` (`f32`, the default, or `bf16`: DocTune's
//! bf16 weights under f32 activations, `gemm::bf16`, against PyTorch multiplying bf16 by bf16).

use doctune_models::ops::{frozen::input_grad, frozen_matmul};
use doctune_models::{DType, Device, Tensor};
use doctune_testkit::bench::{bench_threads, run_json};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// (config, tokens per micro-batch, hidden, kv width, intermediate, vocab)
const CONFIGS: [(&str, usize, usize, usize, usize, usize); 4] = [
    ("tiny", 512, 256, 256, 688, 8192),
    ("20m", 1024, 512, 512, 1408, 8192),
    ("20m-gqa", 1024, 512, 256, 1408, 8192),
    ("100m", 1024, 768, 768, 2048, 16384),
];

/// GFLOP/s of `f` on an (m×k)·(k×n) product, timed for about 0.4 s after 3 warm-ups.
fn rate(m: usize, k: usize, n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let (mut reps, t0) = (0u64, Instant::now());
    while t0.elapsed().as_secs_f64() < 0.4 {
        f();
        reps += 1;
    }
    2.0 * (m * k * n) as f64 * reps as f64 / t0.elapsed().as_secs_f64() / 1e9
}

/// DocTune's product as a frozen projection runs it: f32 activations, the weight in `wdtype`
/// (bf16: the AVX-512 BF16 kernel, the activations' rounding and packing included).
fn ours(m: usize, k: usize, n: usize, transposed: bool, wdtype: DType) -> f64 {
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
    if transposed {
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)
            .unwrap()
            .to_dtype(wdtype)
            .unwrap();
        rate(m, k, n, || drop(frozen_matmul(&a, &w).unwrap()))
    } else {
        let w = Tensor::randn(0f32, 1.0, (k, n), &dev)
            .unwrap()
            .to_dtype(wdtype)
            .unwrap();
        rate(m, k, n, || drop(input_grad(&a, &w).unwrap()))
    }
}

/// The `gemm` crate on the same shape (its own kernel choice), as candle's matmul calls it.
fn crate_gemm(m: usize, k: usize, n: usize, transposed: bool) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; m * n];
    // rhs (k×n): Wᵀ of a row-major [n, k] weight, or a row-major [k, n] matrix.
    let (rs, cs) = if transposed {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    let threads = rayon::current_num_threads();
    rate(m, k, n, || {
        // SAFETY: the three buffers hold m·k, k·n and m·n elements, addressed by these strides.
        #[allow(unsafe_code)]
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                cs,
                rs,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(threads),
            )
        }
    })
}

fn main() {
    // As the shells do, before any thread exists.
    doctune_models::cpu::tune_thread_pools();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // Freed buffers stay in the process, as in a training run (and as PyTorch's allocator
    // keeps them): the products' outputs are not page-faulted in again on every call.
    let _heap = doctune_models::HeapGuard::keep_freed_memory();
    let threads = bench_threads();
    let wanted =
        std::env::var("DOCTUNE_BENCH_CONFIGS").unwrap_or_else(|_| "tiny,20m,20m-gqa,100m".into());
    let python = std::env::var("DOCTUNE_BENCH_PYTHON").ok();
    let script = Path::new(&crate_dir()).join("benches/gemm.py");
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let bf16 = std::env::var("DOCTUNE_BENCH_DTYPE").is_ok_and(|d| d == "bf16");
    let wdtype = if bf16 { DType::BF16 } else { DType::F32 };
    if bf16 {
        println!(
            "bf16 weights × f32 activations, {threads} thread(s): DocTune ({}, {}) against PyTorch's bf16 GEMM (both operands bf16)",
            if doctune_models::gemm::bf16::available() {
                "AVX-512 BF16 kernel"
            } else {
                "portable path"
            },
            doctune_models::cpu::describe_cpu()
        );
    } else {
        println!(
            "f32 GEMM, {threads} thread(s): DocTune ({}) against PyTorch",
            doctune_models::cpu::describe()
        );
    }
    for &(name, m, h, kv, i, v) in CONFIGS
        .iter()
        .filter(|c| wanted.split(',').any(|w| w.trim() == c.0))
    {
        let projections = [
            ("q/o", h, h),
            ("k/v", h, kv),
            ("gate/up", h, i),
            ("down", i, h),
            ("head", h, v),
        ];
        // (label, m, k, n, transposed)
        let mut shapes = Vec::new();
        for (p, inp, out) in projections {
            shapes.push((format!("{p} x·Wᵀ"), m, inp, out, true));
            shapes.push((format!("{p} g·W"), m, out, inp, false));
        }
        let spec: Vec<serde_json::Value> = shapes
            .iter()
            .map(|s| serde_json::json!([s.1, s.2, s.3, s.4]))
            .collect();
        let torch = python.as_ref().and_then(|py| {
            run_json(
                Command::new(py)
                    .arg(&script)
                    .arg(threads.to_string())
                    .arg(serde_json::to_string(&spec).unwrap())
                    .arg(if bf16 { "bf16" } else { "f32" })
                    .env("OMP_NUM_THREADS", threads.to_string()),
            )
        });
        let kernels = torch
            .as_ref()
            .and_then(|t| t["kernels"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "-".into());
        println!("{name} ({m} tokens; PyTorch kernels: {kernels})");
        println!(
            "  {:<16} {:>16} {:>9} {:>9} {:>6} {:>9}",
            "shape", "m×k·k×n", "ours GF/s", "torch", "ratio", "gemm 0.19"
        );
        let (mut t_ours, mut t_torch, mut t_crate) = (0.0, 0.0, 0.0);
        for (j, (label, m, k, n, tr)) in shapes.iter().enumerate() {
            let o = ours(*m, *k, *n, *tr, wdtype);
            let t = torch.as_ref().and_then(|t| t["gflops"][j].as_f64());
            let flops = 2.0 * (m * k * n) as f64;
            t_ours += flops / o;
            if let Some(t) = t {
                t_torch += flops / t;
            }
            // The gemm crate's f32 rate on the same shape (for bf16: what f32 would give).
            let g = crate_gemm(*m, *k, *n, *tr);
            t_crate += flops / g;
            println!(
                "  {:<16} {:>16} {:>9.1} {:>9} {:>6} {:>9.1}",
                label,
                format!("{m}×{k}·{k}×{n}"),
                o,
                t.map_or("-".into(), |t| format!("{t:.1}")),
                t.map_or("-".into(), |t| format!("{:.2}x", o / t)),
                g,
            );
        }
        println!(
            "  all shapes, by time: ours / torch {}, ours / gemm 0.19 {:.2}x",
            if t_torch > 0.0 {
                format!("{:.2}x", t_torch / t_ours)
            } else {
                "-".into()
            },
            t_crate / t_ours
        );
    }
}

/// This crate's folder, read when the benchmark runs.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
