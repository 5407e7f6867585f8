//! Tokenise + pack throughput of continued-pretraining datasets: DocTune against the same work
//! in Python (Hugging Face `tokenizers` through transformers' fast tokenizer, and
//! `datasets.map` as transformers' run_clm example uses it), with the same tokenizer and the
//! same documents, in one invocation.
//!
//! ```text
//! DOCTUNE_BENCH_PYTHON=/path/to/venv/bin/python cargo bench -p doctune-dataset --bench pack
//! ```
//! The corpus is ~20 MB of seeded word-salad prose in 2,000 documents (sentences, paragraphs);
//! the tokenizer is a 16k byte-level BPE trained on part of it here. Both sides use every core
//! (`RAYON_NUM_THREADS` applies to both). DocTune's side also marks sentence starts, which the
//! Python side does not do. The full `build` (which also decodes each window and writes JSONL)
//! is timed separately.

use doctune_core::{CancelToken, NullSink};
use doctune_dataset::{pack, tokenize_documents, BuildOptions, Inputs, Mode, TextSource};
use doctune_tokenizer::ModelTokenizer;
use std::time::Instant;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

const SEQ_LEN: usize = 1024;

fn corpus() -> Vec<String> {
    let words: Vec<String> = "the of and to in a is that for it as was with be by on not he this are or his from at which but have an they you were her she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three"
        .split(' ').map(String::from).collect();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    (0..2000)
        .map(|_| {
            let mut doc = String::with_capacity(11_000);
            while doc.len() < 10_000 {
                for _ in 0..(3 + next(5)) {
                    let n = 6 + next(14);
                    for w in 0..n {
                        let word = &words[next(words.len())];
                        if w == 0 {
                            let mut c = word.chars();
                            doc.extend(c.next().map(|f| f.to_ascii_uppercase()));
                            doc.push_str(c.as_str());
                        } else {
                            doc.push(' ');
                            doc.push_str(word);
                        }
                        if w + 1 < n && next(12) == 0 {
                            doc.push(',');
                        }
                    }
                    doc.push_str(if next(10) == 0 { "? " } else { ". " });
                }
                doc.push_str("\n\n");
            }
            doc
        })
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let docs = corpus();
    let bytes: usize = docs.iter().map(String::len).sum();

    // A 16k byte-level BPE, trained on the first 200 documents.
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(16_000)
        .show_progress(false)
        .special_tokens(vec![
            AddedToken::from("<s>", true),
            AddedToken::from("</s>", true),
        ])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tok.train(&mut trainer, docs[..200].iter()).unwrap();
    tok.save(dir.path().join("tokenizer.json"), false).unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": "</s>"}"#,
    )
    .unwrap();
    let corpus_path = dir.path().join("corpus.jsonl");
    let lines: String = docs
        .iter()
        .map(|d| serde_json::json!({ "text": d }).to_string() + "\n")
        .collect();
    std::fs::write(&corpus_path, lines).unwrap();

    let mt = ModelTokenizer::load(dir.path()).unwrap();
    let sources: Vec<TextSource> = docs
        .iter()
        .enumerate()
        .map(|(i, t)| TextSource {
            name: format!("doc{i}"),
            sha256: format!("{i:064}"),
            text: t.clone(),
        })
        .collect();
    let refs: Vec<&TextSource> = sources.iter().collect();

    let mut best = f64::MAX;
    let mut tokens = 0;
    let mut windows = 0;
    for _ in 0..3 {
        let t0 = Instant::now();
        let [train, _] =
            tokenize_documents(&mt, &refs, |_| 0, &NullSink, &CancelToken::new()).unwrap();
        let w = pack::windows(&train, SEQ_LEN, SEQ_LEN, false);
        best = best.min(t0.elapsed().as_secs_f64());
        tokens = train.len();
        windows = w.len();
    }
    let ours = tokens as f64 / best;

    // The whole build, written to disk (decoded window text and JSONL included).
    let out = dir.path().join("datasets");
    let t0 = Instant::now();
    let opts = BuildOptions {
        mode: Mode::Pretrain,
        seq_len: SEQ_LEN,
        keep_last_partial: false,
        ..Default::default()
    };
    doctune_dataset::build(
        &out,
        "bench",
        dir.path(),
        &mt,
        &Inputs::Documents(sources.clone()),
        &opts,
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    let build_secs = t0.elapsed().as_secs_f64();

    println!(
        "Tokenise + pack ({} documents, {:.1} MB, {tokens} tokens, {windows} windows of {SEQ_LEN})",
        docs.len(),
        bytes as f64 / 1e6
    );
    println!(
        "  DocTune           {:>8.3} s  {:>12.0} tokens/s",
        best, ours
    );
    if let Ok(py) = std::env::var("DOCTUNE_BENCH_PYTHON") {
        let script = std::path::Path::new(&crate_dir()).join("benches/pack.py");
        let o = std::process::Command::new(py)
            .arg(script)
            .arg(dir.path())
            .arg(&corpus_path)
            .arg(SEQ_LEN.to_string())
            .output()
            .unwrap();
        match serde_json::from_slice::<serde_json::Value>(o.stdout.trim_ascii()) {
            Ok(v) => {
                let theirs = v["tokens_per_sec"].as_f64().unwrap_or(0.0);
                println!(
                    "  tokenizers+datasets {:>6.3} s  {:>12.0} tokens/s  ({} tokens)",
                    v["seconds"].as_f64().unwrap_or(0.0),
                    theirs,
                    v["tokens"]
                );
                println!("  ratio: DocTune is {:.2}x (target >= 3x)", ours / theirs);
            }
            Err(_) => println!(
                "  python side failed: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
        }
    } else {
        println!("  (set DOCTUNE_BENCH_PYTHON to a Python with transformers + datasets for the comparison)");
    }
    println!(
        "  full build incl. decoding windows and writing JSONL: {build_secs:.3} s ({:.0} tokens/s)",
        tokens as f64 / build_secs
    );
}

/// This crate's folder, read when the test runs (cargo sets it then too): a test binary that
/// cargo reuses from a build in another checkout sharing the target folder must read this
/// checkout's fixtures, not that one's.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
