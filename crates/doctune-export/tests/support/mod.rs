//! Runs to export, shared by the tests and the benchmark (`#[path]`-included there): a random
//! Llama with the Llama fixture's tokenizer, and a short instruction run on any model folder.

// Each file that includes this module uses a part of it.
#![allow(dead_code)]

use doctune_core::{CancelToken, NullSink};
use doctune_dataset::{BuildOptions, Inputs, Mode};
use doctune_testkit::models::{write_random_llama, RandomLlama};
use doctune_train::{train, Method, RunConfig};
use std::path::{Path, PathBuf};

pub fn crate_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
}

/// A tiny fixture model folder of the models crate (`llama`, `qwen3`, …).
pub fn fixture(name: &str) -> PathBuf {
    crate_dir()
        .join("../doctune-models/tests/fixtures")
        .join(name)
}

/// A random Llama of shape `m` in `dir` with the Llama fixture's tokenizer and chat template.
pub fn random_llama(dir: &Path, m: &RandomLlama) -> PathBuf {
    write_random_llama(dir, m).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        std::fs::copy(fixture("llama").join(f), dir.join(f)).unwrap();
    }
    dir.to_path_buf()
}

/// A `steps`-step run of `model` in `dir` on 24 small instruction examples (48-token windows,
/// micro-batches of 2, a checkpoint every 2 steps); returns the run folder.
pub fn train_on(dir: &Path, model: &Path, method: Method, steps: u64) -> PathBuf {
    let input = dir.join("qa.jsonl");
    let text: String = (0..24)
        .map(|i| {
            format!(
                "{{\"instruction\":\"What is {i} plus {i}?\",\"output\":\"It is {}.\"}}\n",
                2 * i
            )
        })
        .collect();
    std::fs::write(&input, text).unwrap();
    let tok = doctune_tokenizer::ModelTokenizer::load(model).unwrap();
    let ds = doctune_dataset::build(
        &dir.join("datasets"),
        "d",
        model,
        &tok,
        &Inputs::Files(vec![input]),
        &BuildOptions {
            mode: Mode::Instruct,
            seq_len: 48,
            val_fraction: 0.2,
            ..Default::default()
        },
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap()
    .dir;
    let cfg = RunConfig {
        base_model: model.to_path_buf(),
        dataset: ds,
        method,
        max_steps: Some(steps),
        micro_batch: 2,
        lr: 0.02,
        checkpoint_every: 2,
        ..Default::default()
    };
    train(cfg, &dir.join("runs"), "r", &NullSink, &CancelToken::new()).unwrap();
    dir.join("runs/r")
}
