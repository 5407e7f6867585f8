//! GGUF export time and memory against the Python path, in one invocation: DocTune's `export()`
//! of a LoRA run on a random ~100M Llama (merge, llama.cpp's layout, quantise, write, hash) at
//! q8_0 against gguf-py doing the same merge, permutation and Q8_0 quantisation tensor by tensor
//! (`benches/export.py`), and at q4_k_m against llama.cpp's own quantiser (`llama_model_quantize`
//! through llama-cpp-python) starting from an F32 GGUF of the merged model, so llama.cpp does
//! less of the work. Each side runs in its own process; its memory is sampled from outside
//! (peak RSS, which counts the mmapped model file's pages, and peak anonymous memory, which
//! shows whether a side holds one tensor at a time or the whole model).
//!
//! ```text
//! DOCTUNE_BENCH_PYTHON=/path/to/venv/bin/python cargo bench -p doctune-export --bench export
//! ```
//! Options (environment): `DOCTUNE_BENCH_THREADS` (default: all cores; DocTune's quantiser and
//! llama.cpp's use them, gguf-py's numpy runs on one), `DOCTUNE_BENCH_CONFIGS` (`20m`, `100m`;
//! default `100m`), `DOCTUNE_BENCH_REPEAT` (runs of each side, alternating; the median time is
//! shown, default 3). Without Python only DocTune's side runs.

use doctune_core::{CancelToken, NullSink};
use doctune_export::{export, Dtype, ExportOptions, ExportRequest, Format, Quant};
use doctune_models::Target;
use doctune_testkit::bench::{
    bench_env, bench_threads, peak_rss_bytes, run_json_sampled, PeakMemory,
};
use doctune_testkit::models::RandomLlama;
use doctune_train::Method;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[path = "../tests/support/mod.rs"]
mod support;
use support::crate_dir;

const CONFIGS: [(&str, RandomLlama); 2] = [
    (
        "20m",
        RandomLlama {
            hidden: 512,
            layers: 6,
            heads: 8,
            kv_heads: 8,
            intermediate: 1408,
            vocab: 8192,
        },
    ),
    // The trainer benchmark's ~100M model.
    (
        "100m",
        RandomLlama {
            hidden: 768,
            layers: 12,
            heads: 12,
            kv_heads: 12,
            intermediate: 2048,
            vocab: 16384,
        },
    ),
];

fn request(run: &Path, out: &Path, quant: Quant) -> ExportRequest {
    ExportRequest {
        run_dir: run.to_path_buf(),
        out: out.to_path_buf(),
        base_name: None,
        options: ExportOptions {
            format: Format::Gguf,
            quant,
            dtype: Dtype::F32,
            checkpoint: None,
            system: None,
            overwrite: false,
        },
    }
}

fn gguf_in(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "gguf"))
        .expect("the export wrote a GGUF file")
}

/// Exports the run in this process and prints the time and peak memory.
fn worker(run: &Path, out: &Path, quant: &str) {
    let start = Instant::now();
    let report = export(
        &request(run, out, quant.parse().unwrap()),
        &|_| None,
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    println!(
        "{}",
        serde_json::json!({
            "seconds": start.elapsed().as_secs_f64(), "peak_rss_bytes": peak_rss_bytes(),
            "bytes": report.total_bytes,
        })
    );
}

/// A random model with the Llama fixture's tokenizer, and a one-step LoRA run on it.
fn prepare(dir: &Path, model: &RandomLlama) -> (PathBuf, PathBuf) {
    let base = support::random_llama(&dir.join("base"), model);
    let method = Method::Lora {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        rslora: false,
        targets: Target::ALL.to_vec(),
    };
    let run = support::train_on(dir, &base, method, 1);
    (base, run)
}

/// The median of the runs' `seconds`.
fn median_seconds(runs: &[(serde_json::Value, PeakMemory)]) -> Option<f64> {
    let mut s: Vec<f64> = runs
        .iter()
        .filter_map(|(v, _)| v["seconds"].as_f64())
        .collect();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied()
}

/// The largest memory over the runs.
fn peak(runs: &[(serde_json::Value, PeakMemory)]) -> Option<PeakMemory> {
    runs.iter().map(|(_, m)| *m).reduce(|a, b| PeakMemory {
        rss_bytes: a.rss_bytes.max(b.rss_bytes),
        anon_bytes: a.anon_bytes.max(b.anon_bytes),
    })
}

/// Writes back every dirty page first, so a side's time does not include flushing what was
/// written before it. (Each side syncs its own output: DocTune before it renames a finished
/// export into place, the Python worker at its end, for the same guarantee.)
fn settle() {
    let _ = Command::new("sync").status();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--worker") {
        worker(
            Path::new(&args[i + 1]),
            Path::new(&args[i + 2]),
            &args[i + 3],
        );
        return;
    }
    // `--prepare DIR CONFIG`: only write the model and run (to profile a worker by hand).
    if let Some(i) = args.iter().position(|a| a == "--prepare") {
        let (_, model) = CONFIGS.iter().find(|(n, _)| *n == args[i + 2]).unwrap();
        let (_, run) = prepare(Path::new(&args[i + 1]), model);
        println!("{}", run.display());
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let threads = bench_threads();
    let repeat: usize = bench_env("DOCTUNE_BENCH_REPEAT").unwrap_or(3).max(1);
    let wanted = std::env::var("DOCTUNE_BENCH_CONFIGS").unwrap_or_else(|_| "100m".into());
    let python = std::env::var("DOCTUNE_BENCH_PYTHON").ok();
    let script = crate_dir().join("benches/export.py");
    let mb = |b: f64| format!("{:.0}", b / 1048576.0);
    for (name, model) in CONFIGS
        .iter()
        .filter(|(n, _)| wanted.split(',').any(|w| w.trim() == *n))
    {
        let tmp = tempfile::tempdir().unwrap();
        let (base, run) = prepare(tmp.path(), model);
        let weights = std::fs::metadata(base.join("model.safetensors"))
            .unwrap()
            .len() as f64;
        let largest = (model.vocab * model.hidden).max(model.hidden * model.intermediate) * 4;
        // llama.cpp's quantiser starts from a GGUF: DocTune's F32 export of the merged model.
        let f32_dir = tmp.path().join("f32");
        export(
            &request(&run, &f32_dir, Quant::F32),
            &|_| None,
            &NullSink,
            &CancelToken::new(),
        )
        .unwrap();
        println!(
            "GGUF export of a LoRA run (r=8, every projection) on a random {name} Llama ({} MB of f32 weights, largest tensor {} MB), {threads} thread(s)",
            mb(weights),
            mb(largest as f64),
        );
        println!(
            "{:<7} {:>8} {:>8} {:>6} | {:>8} {:>8} {:>8} {:>8} | reference",
            "quant", "ours s", "ref s", "speed", "ours RSS", "ours anon", "ref RSS", "ref anon"
        );
        for (quant, reference) in [("q8_0", "gguf-py"), ("q4_k_m", "llama.cpp")] {
            // Each side `repeat` times, alternating; the median time and the largest memory.
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for i in 0..repeat {
                let out = tmp.path().join(format!("ours-{quant}-{i}"));
                settle();
                ours.extend(run_json_sampled(
                    Command::new(std::env::current_exe().unwrap())
                        .arg("--worker")
                        .args([&run, &out])
                        .arg(quant)
                        .env("RAYON_NUM_THREADS", threads.to_string()),
                ));
                let theirs_out = tmp.path().join(format!("theirs-{quant}-{i}.gguf"));
                settle();
                theirs.extend(python.as_ref().and_then(|py| {
                    let mut cmd = Command::new(py);
                    cmd.arg(&script).arg(reference);
                    if reference == "gguf-py" {
                        cmd.args([&base, &run.join("adapter"), &theirs_out]);
                    } else {
                        cmd.args([&gguf_in(&f32_dir), &theirs_out])
                            .args(["15", &threads.to_string()]);
                    }
                    run_json_sampled(cmd.env("OMP_NUM_THREADS", threads.to_string()))
                }));
                let _ = std::fs::remove_dir_all(&out);
                let _ = std::fs::remove_file(&theirs_out);
            }
            let (os, ts) = (median_seconds(&ours), median_seconds(&theirs));
            let (ours, theirs) = (peak(&ours), peak(&theirs));
            let show = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}"));
            let mem = |m: &Option<PeakMemory>, anon: bool| {
                m.map_or("-".into(), |m| {
                    mb(if anon { m.anon_bytes } else { m.rss_bytes } as f64)
                })
            };
            println!(
                "{:<7} {:>8} {:>8} {:>6} | {:>8} {:>8} {:>8} {:>8} | {}",
                quant,
                show(os),
                show(ts),
                match (os, ts) {
                    (Some(o), Some(t)) if o > 0.0 => format!("{:.1}x", t / o),
                    _ => "-".into(),
                },
                mem(&ours, false),
                mem(&ours, true),
                mem(&theirs, false),
                mem(&theirs, true),
                if reference == "gguf-py" {
                    "gguf-py: merge, permute, Q8_0, stream (numpy, one thread)"
                } else {
                    "llama.cpp's llama_model_quantize from the F32 GGUF"
                }
            );
        }
    }
    println!("speed: reference time / DocTune's time (higher is better), medians of {repeat} runs, each side ending with an fsync of its output. Memory in MB, the largest of the runs, sampled every 5 ms: RSS counts the mmapped model file; anon is what each side allocated.");
}
