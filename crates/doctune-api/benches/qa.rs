//! Question–answer builds, passages per second: DocTune's own user guide (`demo/*.md`, six
//! pages) through `dataset build --mode qa` with the templates, with a generator model (the tiny
//! random Llama of `doctune-models/tests/fixtures`, on the CPU: the mechanics' cost — prompt,
//! generation, one retry, parsing, cache — not a real model's), and the same build again from
//! the cache. A real instruct model's figure needs one in the library (`DOCTUNE_BENCH_QA_MODEL`
//! = a model folder or library id; its passages/s is then printed too).
//!
//! `cargo bench -p doctune-api --bench qa` (`DOCTUNE_BENCH_QA_TOKENS`: the reply limit, 64).

use doctune_api::dataset::{self, BuildOptions, Generator, Mode, QaOptions};
use doctune_api::{projects, CancelToken, Home, Limits};
use doctune_core::NullSink;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn timed(
    home: &Home,
    dir: &Path,
    req: &doctune_api::DatasetRequest,
) -> (
    f64,
    Result<doctune_api::DatasetSummary, doctune_api::ApiError>,
) {
    let t0 = Instant::now();
    let r = dataset::build(home, dir, req, &NullSink, &CancelToken::new());
    (t0.elapsed().as_secs_f64(), r)
}

fn main() {
    let work = tempfile::tempdir().unwrap();
    let home = Home::at(work.path().join("home"));
    let dir = PathBuf::from(projects::create(&home, "bench").unwrap().path);
    let mut pages: Vec<PathBuf> = std::fs::read_dir(crate_dir().join("demo"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    doctune_api::add_documents(
        &dir,
        &pages,
        &Limits::default(),
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    doctune_api::ingest::ingest(
        &dir,
        None,
        &Default::default(),
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    let tiny = crate_dir().join("../doctune-models/tests/fixtures/llama");
    let tokens: usize = std::env::var("DOCTUNE_BENCH_QA_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let req = |generator: Generator| doctune_api::DatasetRequest {
        model: tiny.display().to_string(),
        inputs: vec![],
        options: BuildOptions {
            mode: Mode::Qa,
            seq_len: 1024,
            val_fraction: 0.0,
            qa: QaOptions {
                generator,
                max_new_tokens: tokens,
                ..QaOptions::default()
            },
            ..BuildOptions::default()
        },
    };
    println!("qa bench: {} pages of DocTune's guide", pages.len());
    println!("cpu: {}", doctune_models::cpu::describe_cpu());

    let (secs, r) = timed(&home, &dir, &req(Generator::Template));
    let ds = r.unwrap();
    let qa = ds.meta.qa.unwrap();
    println!(
        "templates:          {:>4} passages in {secs:.3} s = {:>8.1} passages/s, {} pairs kept",
        qa.total.passages,
        qa.total.passages as f64 / secs,
        qa.total.kept
    );

    let mut models = vec![("tiny random model", tiny.display().to_string())];
    if let Ok(m) = std::env::var("DOCTUNE_BENCH_QA_MODEL") {
        models.push(("DOCTUNE_BENCH_QA_MODEL", m));
    }
    for (label, model) in models {
        let g = req(Generator::Model { model });
        // The tiny model's replies are unreadable (random weights), so its builds end with "no
        // usable pair" after every passage was generated and cached; the report counts them.
        let (first, r) = timed(&home, &dir, &g);
        let (again, r2) = timed(&home, &dir, &g);
        let passages = match &r {
            Ok(ds) => ds.meta.qa.as_ref().map_or(0, |q| q.total.passages),
            Err(_) => qa.total.passages,
        };
        let outcome = match r {
            Ok(ds) => format!("{} pairs kept", ds.meta.qa.map_or(0, |q| q.total.kept)),
            Err(e) => format!("({})", e.message),
        };
        let _ = r2;
        println!(
            "{label:<19} {passages:>4} passages in {first:.2} s = {:>8.2} passages/s (replies ≤ {tokens} tokens, one retry each) {outcome}",
            passages as f64 / first
        );
        println!(
            "  again, from cache: {passages:>4} passages in {again:.3} s = {:>8.1} passages/s",
            passages as f64 / again
        );
    }
}
