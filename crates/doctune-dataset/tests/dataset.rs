//! The dataset builder end to end: chat templates against transformers' goldens, instruction and
//! pretraining builds on disk, masks, splits, bad rows.

use doctune_core::{CancelToken, NullSink};
use doctune_dataset::{
    build, preview, read_meta, read_split, BuildOptions, DatasetError, Inputs, LossOn, Mode,
    OnBadRow, Split, TextSource,
};
use doctune_tokenizer::{Message, ModelTokenizer};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(crate_dir()).join("tests/fixtures")
}

fn model(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

#[test]
fn chat_templates_render_and_encode_as_transformers_does() {
    let goldens: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("goldens.json")).unwrap()).unwrap();
    let goldens = goldens.as_object().unwrap();
    assert!(goldens.len() >= 6);
    for (name, cases) in goldens {
        let tok = ModelTokenizer::load(&model(name)).unwrap();
        let template = tok.require_chat_template().unwrap();
        for case in cases.as_array().unwrap() {
            let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
            let gen = case["add_generation_prompt"].as_bool().unwrap();
            let rendered = template.render(&messages, gen);
            if let Some(err) = case.get("error").and_then(Value::as_str) {
                let ours = rendered.unwrap_err().to_string();
                assert!(ours.contains(err), "{name}: expected `{err}`, got `{ours}`");
                continue;
            }
            let text = rendered.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                text,
                case["text"].as_str().unwrap(),
                "{name} (generation prompt {gen})"
            );
            let ids: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(tok.encode(&text, false).unwrap(), ids, "{name}: ids");
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn opts(mode: Mode) -> BuildOptions {
    BuildOptions {
        mode,
        seq_len: 256,
        val_fraction: 0.0,
        ..BuildOptions::default()
    }
}

fn run(
    out: &Path,
    id: &str,
    model_name: &str,
    inputs: &Inputs,
    o: &BuildOptions,
) -> Result<doctune_dataset::BuildReport, DatasetError> {
    let tok = ModelTokenizer::load(&model(model_name)).unwrap();
    build(
        out,
        id,
        &model(model_name),
        &tok,
        inputs,
        o,
        &NullSink,
        &CancelToken::new(),
    )
}

#[test]
fn instruct_masks_only_the_assistant_and_reports_bad_rows() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "chat.jsonl",
        "{\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},{\"role\":\"user\",\"content\":\"What is LoRA?\"},{\"role\":\"assistant\",\"content\":\"A low-rank adapter.\"}]}\n\
         {\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":\"Hello!\"},{\"role\":\"user\",\"content\":\"Tell me a joke.\"},{\"role\":\"assistant\",\"content\":\"It memorised the data.\"}]}\n\
         {\"messages\": [oops\n\
         {\"messages\":[{\"role\":\"user\",\"content\":\"What is LoRA?\"},{\"role\":\"robot\",\"content\":\"x\"}]}\n\
         {\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},{\"role\":\"user\",\"content\":\"What is LoRA?\"},{\"role\":\"assistant\",\"content\":\"A low-rank adapter.\"}]}\n",
    );
    let out = d.path().join("datasets");
    let r = run(
        &out,
        "chat",
        "llama3.1",
        &Inputs::Files(vec![f.clone()]),
        &opts(Mode::Instruct),
    )
    .unwrap();
    let s = &r.meta.stats;
    assert_eq!((s.train_examples, s.duplicates, s.bad_rows), (2, 1, 2));
    let lines: Vec<usize> = r.meta.bad_rows.iter().map(|b| b.line).collect();
    assert_eq!(lines, vec![3, 4]);
    assert!(r.meta.bad_rows[1].reason.contains("unknown role `robot`"));
    assert!(
        r.meta.notes[0].contains("OpenAI chat"),
        "{:?}",
        r.meta.notes
    );

    let tok = ModelTokenizer::load(&model("llama3.1")).unwrap();
    let records = preview(&r.dir, 10).unwrap();
    for rec in &records {
        // The spans are the replies with their end-of-turn marker, in character offsets.
        let chars: Vec<char> = rec.text.chars().collect();
        let trained: Vec<String> = rec
            .spans
            .iter()
            .map(|&(a, b)| chars[a..b].iter().collect())
            .collect();
        assert!(
            trained.iter().all(|t| t.ends_with("<|eot_id|>")),
            "{trained:?}"
        );
        // The masked tokens decode to exactly the spans.
        let masked: Vec<u32> = rec
            .ids
            .iter()
            .zip(&rec.mask)
            .filter(|(_, &m)| m == 1)
            .map(|(&i, _)| i)
            .collect();
        assert_eq!(tok.decode(&masked, false).unwrap(), trained.concat());
        assert_eq!(tok.encode(&rec.text, false).unwrap(), rec.ids);
    }
    assert!(records[1].spans.len() == 2);
    let meta = read_meta(&r.dir).unwrap();
    assert_eq!(meta, r.meta);
    assert_eq!(
        meta.sources[0].format,
        Some(doctune_dataset::import::RowFormat::Openai)
    );

    // --on-bad-row stop: the first bad row, with its line.
    let mut o = opts(Mode::Instruct);
    o.on_bad_row = OnBadRow::Stop;
    let e = run(
        &out,
        "chat2",
        "llama3.1",
        &Inputs::Files(vec![f.clone()]),
        &o,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("chat.jsonl: line 3: malformed JSON"), "{e}");
    assert!(!out.join("chat2").exists());

    // Loss on every token: the mask covers everything but BOS.
    let mut o = opts(Mode::Instruct);
    o.loss_on = LossOn::All;
    let r = run(&out, "all", "llama3.1", &Inputs::Files(vec![f]), &o).unwrap();
    let rec = &preview(&r.dir, 1).unwrap()[0];
    assert_eq!(rec.mask[0], 0);
    assert!(rec.mask[1..].iter().all(|&m| m == 1));
}

#[test]
fn each_template_family_masks_its_replies() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "a.jsonl",
        "{\"instruction\":\"Tell me a joke.\",\"input\":\"\",\"output\":\"Why did the model overfit?\"}\n",
    );
    for name in [
        "llama3",
        "llama3.1",
        "qwen2.5",
        "mistral-v0.3",
        "phi3.5",
        "gemma2",
    ] {
        let out = d.path().join(name);
        // Two files with different formats in one build.
        let g = write(d.path(), "b.jsonl", "{\"conversations\":[{\"from\":\"human\",\"value\":\"Hi\"},{\"from\":\"gpt\",\"value\":\"Hello!\"},{\"from\":\"human\",\"value\":\"Ça va?\"},{\"from\":\"gpt\",\"value\":\"Oui.\"}]}\n");
        let r = run(
            &out,
            "x",
            name,
            &Inputs::Files(vec![f.clone(), g]),
            &opts(Mode::Instruct),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.meta.stats.bad_rows, 0, "{name}: {:?}", r.meta.bad_rows);
        for rec in preview(&r.dir, 10).unwrap() {
            let chars: Vec<char> = rec.text.chars().collect();
            let trained: String = rec
                .spans
                .iter()
                .flat_map(|&(a, b)| chars[a..b].iter())
                .collect();
            for reply in ["Why did the model overfit?", "Hello!", "Oui."] {
                if rec.text.contains(reply) {
                    assert!(
                        trained.contains(reply),
                        "{name}: `{reply}` not trained in {:?}",
                        rec.text
                    );
                }
            }
            for prompt in ["Tell me a joke.", "Ça va?"] {
                assert!(
                    !trained.contains(prompt),
                    "{name}: prompt `{prompt}` trained in {:?}",
                    rec.text
                );
            }
        }
    }
}

#[test]
fn splits_are_seeded_and_stable() {
    let d = tempfile::tempdir().unwrap();
    let rows: String = (0..200)
        .map(|i| format!("{{\"instruction\":\"Question number {i}\",\"output\":\"Answer {i}\"}}\n"))
        .collect();
    let f = write(d.path(), "q.jsonl", &rows);
    let mut o = opts(Mode::Instruct);
    o.val_fraction = 0.2;
    let read = |dir: &Path, s: Split| -> Vec<String> {
        read_split(dir, s)
            .unwrap()
            .map(|r| r.unwrap().text)
            .collect()
    };
    let a = run(
        &d.path().join("1"),
        "a",
        "qwen2.5",
        &Inputs::Files(vec![f.clone()]),
        &o,
    )
    .unwrap();
    let b = run(
        &d.path().join("2"),
        "a",
        "qwen2.5",
        &Inputs::Files(vec![f.clone()]),
        &o,
    )
    .unwrap();
    assert_eq!(read(&a.dir, Split::Val), read(&b.dir, Split::Val));
    let n_val = a.meta.stats.val_examples;
    assert!((25..=55).contains(&n_val), "{n_val} of 200 in validation");
    o.seed = 1;
    let c = run(
        &d.path().join("3"),
        "a",
        "qwen2.5",
        &Inputs::Files(vec![f]),
        &o,
    )
    .unwrap();
    assert_ne!(read(&a.dir, Split::Val), read(&c.dir, Split::Val));
    // The split rule itself is a fixed function of the seed and the text (same on every OS).
    assert!(doctune_dataset::is_val(0, b"x", 1.0) && !doctune_dataset::is_val(0, b"x", 0.0));
    let hist: usize = a.meta.stats.histogram.iter().sum();
    assert_eq!(hist, a.meta.stats.train_examples);
}

#[test]
fn long_examples_are_truncated_or_dropped_with_a_reason() {
    let d = tempfile::tempdir().unwrap();
    let long = "word ".repeat(300);
    let f = write(
        d.path(),
        "l.jsonl",
        &format!(
            "{{\"instruction\":\"Short\",\"output\":\"{long}\"}}\n{{\"instruction\":\"{long}\",\"output\":\"late\"}}\n{{\"instruction\":\"ok\",\"output\":\"fine\"}}\n"
        ),
    );
    let mut o = opts(Mode::Instruct);
    o.seq_len = 64;
    let r = run(
        &d.path().join("o"),
        "t",
        "llama3",
        &Inputs::Files(vec![f]),
        &o,
    )
    .unwrap();
    let s = &r.meta.stats;
    assert_eq!(s.truncated, 1);
    assert_eq!(s.dropped.values().sum::<usize>(), 1);
    assert!(s.dropped.keys().next().unwrap().contains("first 64 tokens"));
    assert!(preview(&r.dir, 10)
        .unwrap()
        .iter()
        .all(|r| r.ids.len() <= 64 && r.ids.len() == r.mask.len()));
}

#[test]
fn pretraining_packs_documents_into_windows() {
    let d = tempfile::tempdir().unwrap();
    let para = "DocTune fine-tunes a language model on your own documents. It extracts the text. ";
    let docs: Vec<TextSource> = (0..3)
        .map(|i| TextSource {
            name: format!("doc{i}.pdf"),
            sha256: format!("{i:064}"),
            text: format!("Title {i}\n\n{}", para.repeat(10 + i)),
        })
        .collect();
    let mut o = opts(Mode::Pretrain);
    o.seq_len = 64;
    let r = run(
        &d.path().join("o"),
        "p",
        "llama3",
        &Inputs::Documents(docs.clone()),
        &o,
    )
    .unwrap();
    let tok = ModelTokenizer::load(&model("llama3")).unwrap();
    let eos = tok.token_to_id("<|eot_id|>").unwrap();
    let recs: Vec<_> = read_split(&r.dir, Split::Train)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(recs.len() > 5);
    assert!(recs[..recs.len() - 1].iter().all(|r| r.ids.len() == 64));
    // Each document ends with EOS, which is trained.
    let all: Vec<u32> = recs.iter().flat_map(|r| r.ids.iter().copied()).collect();
    assert!(all.iter().filter(|&&i| i == eos).count() >= 3);
    // No token trained twice: trained tokens = the whole stream once.
    let trained: usize = recs
        .iter()
        .map(|r| r.mask.iter().filter(|&&m| m == 1).count())
        .sum();
    let stream: usize = docs
        .iter()
        .map(|d| tok.encode(&d.text, true).unwrap().len() + 1)
        .sum();
    assert!(
        trained <= stream && trained + 3 >= stream - 64,
        "{trained} vs {stream}"
    );
    // Windows after the first start at a sentence start where one is near.
    let starts_at_sentence = recs[1..].iter().filter(|r| {
        let t = r.text.trim_start();
        t.starts_with("DocTune") || t.starts_with("It ") || t.starts_with("Title")
    });
    assert!(
        starts_at_sentence.count() >= recs.len() / 2,
        "{:?}",
        recs.iter()
            .map(|r| &r.text[..20.min(r.text.len())])
            .collect::<Vec<_>>()
    );

    // Overlap by stride: the overlapping part is context only.
    o.stride = Some(32);
    o.keep_last_partial = false;
    let r = run(
        &d.path().join("o"),
        "p2",
        "llama3",
        &Inputs::Documents(docs),
        &o,
    )
    .unwrap();
    let recs: Vec<_> = read_split(&r.dir, Split::Train)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(recs.iter().all(|r| r.ids.len() == 64));
    assert!(recs[1..]
        .iter()
        .all(|r| r.mask[..28].iter().all(|&m| m == 0)));
    // Instruction mode needs a file; pretraining needs documents with text.
    let e = run(
        &d.path().join("o"),
        "p3",
        "llama3",
        &Inputs::Documents(vec![]),
        &opts(Mode::Pretrain),
    )
    .unwrap_err();
    assert!(e.to_string().contains("no document has text"), "{e}");
}

/// The fast byte-level path gives exactly the ids of the tokenizer's own pipeline — for the
/// GPT-2 regex and for Llama 3's Split + ByteLevel shape — and steps aside for text with added
/// tokens in it.
#[test]
fn fast_path_equals_the_full_pipeline() {
    use doctune_dataset::fast::FastByteLevel;
    let text = "Hello, world!  It's 2026; naïve café — 日本語 🙂\n\n\tTabs   and   spaces?! 3.14159 x'll\r\nend ";
    let llama3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    for (name, rewrite) in [("qwen2.5", false), ("llama3", true)] {
        let mut json: Value =
            serde_json::from_slice(&std::fs::read(model(name).join("tokenizer.json")).unwrap())
                .unwrap();
        if rewrite {
            json["pre_tokenizer"] = serde_json::json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": llama3}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]});
        }
        let tok = tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap();
        let probe = |special: bool| {
            tok.encode(FastByteLevel::PROBE, special)
                .ok()
                .map(|e| e.get_ids().to_vec())
        };
        let fast =
            FastByteLevel::new(&json, probe).unwrap_or_else(|| panic!("{name}: no fast path"));
        let mut cache = Default::default();
        for t in [text, "", " leading", "trailing\n", &text.repeat(3)] {
            let (ids, starts) = fast.encode(tok.get_model(), t, &mut cache).unwrap();
            let full = tok.encode(t, true).unwrap();
            assert_eq!(ids, full.get_ids(), "{name}: {t:?}");
            assert!(starts.windows(2).all(|w| w[0] <= w[1]));
        }
        // Added tokens in the text: the full pipeline's job.
        let special = json["added_tokens"][0]["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(fast
            .encode(tok.get_model(), &format!("a {special} b"), &mut cache)
            .is_none());
    }
    // A tokenizer of another shape (here: with a normalizer DocTune does not replicate) has none.
    let mut json: Value =
        serde_json::from_slice(&std::fs::read(model("qwen2.5").join("tokenizer.json")).unwrap())
            .unwrap();
    json["normalizer"] = serde_json::json!({"type": "Lowercase"});
    assert!(FastByteLevel::new(&json, |_| Some(vec![1])).is_none());
}

/// This crate's folder, read when the test runs (cargo sets it then too): a test binary that
/// cargo reuses from a build in another checkout sharing the target folder must read this
/// checkout's fixtures, not that one's.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
