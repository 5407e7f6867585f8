//! The question–answer mode: the reply parser against a corpus of malformed replies, the
//! grounding filter against hand-made pairs, pair making with a scripted generator (retries,
//! drops, the model check, the cache as checkpoint, cancel and resume), the template path, and
//! the dataset it becomes (rendered, split by passage, previewed, exported and re-imported).

use doctune_core::{CancelToken, NullSink};
use doctune_dataset::pairs::{export_pairs, PairFormat};
use doctune_dataset::qa::make::drop_reason;
use doctune_dataset::qa::{
    make_pairs, parse_reply, support, PairModel, PairOrigin, QaCache, QaPairs, QaSection, QaSource,
};
use doctune_dataset::{
    build, preview, BuildOptions, DatasetDir, DatasetError, Generator, Inputs, Mode, QaOptions,
};
use doctune_tokenizer::{Message, ModelTokenizer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn the_parser_survives_a_corpus_of_malformed_replies() {
    let corpus = std::fs::read_to_string(fixtures().join("replies.txt")).unwrap();
    let mut cases = 0;
    for case in corpus.split("\n### ").skip(1) {
        let (header, body) = case.split_once('\n').unwrap_or((case, ""));
        let (name, expected) = header.rsplit_once(" | ").unwrap();
        let got = parse_reply(body);
        match expected.trim() {
            "error" => assert!(got.is_err(), "{name}: expected no pairs, got {got:?}"),
            n => {
                let parsed = got.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(
                    parsed.pairs.len(),
                    n.parse::<usize>().unwrap(),
                    "{name}: {parsed:?}"
                );
                for p in &parsed.pairs {
                    for s in [&p.question, &p.answer] {
                        assert!(!s.is_empty() && s.trim() == s, "{name}: {s:?}");
                        assert!(
                            !s.starts_with("Q:") && !s.starts_with("A:"),
                            "{name}: {s:?}"
                        );
                        assert!(!s.contains('*') && !s.contains('\r'), "{name}: {s:?}");
                    }
                }
            }
        }
        cases += 1;
    }
    assert!(cases >= 25, "{cases} cases");
    // Arbitrary bytes never panic.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2_000 {
        let len = (x % 300) as usize;
        let s: String = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                [
                    'Q', 'A', ':', '\n', ' ', '[', ']', '{', '}', '"', '1', '.', '*', 'é', 'x',
                ][(x % 15) as usize]
            })
            .collect();
        let _ = parse_reply(&s);
    }
}

#[test]
fn grounding_separates_supported_from_unsupported_answers() {
    let passage = "DocTune writes every checkpoint atomically: the file is written under a \
                   temporary name and renamed into place. Access tokens are kept in the operating \
                   system's keychain and never written to files, logs or error messages. Models \
                   in pickle formats (.bin, .pt) are refused with a clear error.";
    // (answer, supported)
    let cases = [
        (
            "Checkpoints are written atomically, under a temporary name and then renamed.",
            true,
        ),
        ("In the operating system's keychain.", true),
        (
            "They are never written to files, logs or error messages.",
            true,
        ),
        ("Pickle formats such as .bin and .pt are refused.", true),
        ("It renames the temporary file into place.", true),
        ("Tokens are uploaded to a cloud vault every night.", false),
        (
            "DocTune was founded in Berlin in 2019 by three engineers.",
            false,
        ),
        (
            "Models are quantised to four bits before training starts.",
            false,
        ),
        ("The GPU temperature is shown in the dashboard.", false),
        ("Yes.", false),
        ("", false),
    ];
    for (answer, supported) in cases {
        let s = support(answer, passage);
        assert_eq!(
            s >= QaOptions::default().min_support,
            supported,
            "{answer:?}: support {s:.2}"
        );
    }
}

/// A document with three headed sections, as extraction gives it (character offsets).
fn guide() -> QaSource {
    let parts = [
        (
            "Checkpoints",
            "DocTune writes checkpoints atomically. A checkpoint is a snapshot of the adapter \
             and the optimizer state.",
        ),
        (
            "Secrets",
            "Secrets are kept in the OS keychain. Tokens never appear in files or logs.",
        ),
        (
            "Formats",
            "Safetensors, JSON tokenizers and GGUF are the safe formats DocTune reads.",
        ),
    ];
    let mut text = String::new();
    let mut sections = Vec::new();
    for (heading, body) in parts {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        let start = text.chars().count();
        text.push_str(heading);
        text.push_str("\n\n");
        text.push_str(body);
        sections.push(QaSection {
            label: heading.into(),
            boundary: true,
            start,
            end: text.chars().count(),
        });
    }
    QaSource {
        name: "guide.md".into(),
        sha256: "ab".repeat(32),
        text,
        sections,
    }
}

/// A generator that answers from a script and counts its calls; it cancels the build at call
/// `cancel_at` (1-based) when set.
struct Scripted {
    calls: AtomicUsize,
    cancel_at: Option<(usize, CancelToken)>,
}

impl Scripted {
    fn new() -> Self {
        Self {
            calls: AtomicUsize::new(0),
            cancel_at: None,
        }
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl PairModel for Scripted {
    fn fingerprint(&self) -> &str {
        "scripted-1"
    }

    fn reply(
        &self,
        messages: &[Message],
        _max_new_tokens: usize,
        _cancel: &CancelToken,
    ) -> Result<String, DatasetError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((at, token)) = &self.cancel_at {
            if n >= *at {
                token.cancel();
                return Err(DatasetError::Cancelled);
            }
        }
        let user = &messages.last().unwrap().content;
        let retry = messages.len() > 2;
        if user.contains("Does the passage state") {
            // The model check: "no" for the answer about logs, "yes" otherwise.
            return Ok(if user.contains("Answer: Tokens never") {
                "No."
            } else {
                "Yes, it does."
            }
            .into());
        }
        let passage = &messages[1].content;
        Ok(if passage.contains("checkpoints atomically") {
            if retry {
                "Q: What does DocTune write atomically?\nA: DocTune writes checkpoints atomically.\n\
                 Q: Who invented checkpoints?\nA: Alan Turing invented them in 1950."
            } else {
                "I think this passage is about saving things."
            }
        } else if passage.contains("keychain") {
            "1. Q: Where are secrets kept?\n   A: Secrets are kept safely in the OS keychain.\n\
             2. Q: Where are secrets kept??\n   A: In the OS keychain.\n\
             3. Q: What never appears in files or logs?\n   A: Tokens never appear in files or logs."
        } else {
            "| question | answer |\n|---|---|"
        }
        .to_string())
    }
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

fn model_opts() -> QaOptions {
    QaOptions {
        generator: Generator::Model {
            model: "scripted".into(),
        },
        passage_tokens: 64,
        overlap_tokens: 8,
        ..QaOptions::default()
    }
}

fn make(
    opts: &QaOptions,
    m: &Scripted,
    cache: &Path,
    cancel: &CancelToken,
) -> Result<QaPairs, DatasetError> {
    make_pairs(
        &[guide()],
        opts,
        Some(m as &dyn PairModel),
        &QaCache::at(cache),
        &words,
        &NullSink,
        cancel,
    )
}

#[test]
fn generated_pairs_are_grounded_deduplicated_and_counted_per_document() {
    let d = tempfile::tempdir().unwrap();
    let m = Scripted::new();
    let q = make(&model_opts(), &m, d.path(), &CancelToken::new()).unwrap();
    let r = &q.report.documents[0];
    assert_eq!(r.document, "guide.md");
    assert_eq!(r.passages, 3, "one passage per section");
    // Checkpoints: retried, then 2 pairs (1 invented); secrets: 3 pairs (1 near-duplicate);
    // formats: unreadable twice.
    assert_eq!((r.retries, r.malformed_replies), (2, 1));
    assert_eq!((r.generated, r.kept), (5, 3));
    assert_eq!(r.dropped[drop_reason::UNSUPPORTED], 1);
    assert_eq!(r.dropped[drop_reason::DUPLICATE], 1);
    assert_eq!(m.calls(), 5, "2 passages retried, 1 not");
    assert_eq!(q.report.total.kept, 3);
    assert_eq!(q.report.by_origin["generator"], 3);
    let doc = guide();
    for p in &q.pairs {
        assert_eq!(p.origin, PairOrigin::Generator);
        assert!(p.support >= 0.6);
        // The span is the passage, in the document's characters.
        let span: String = doc
            .text
            .chars()
            .skip(p.start)
            .take(p.end - p.start)
            .collect();
        assert_eq!(span, q.passages[p.passage].text);
        assert!(span.contains(p.answer.trim_end_matches('.')) || p.answer.contains("keychain"));
    }
    assert_eq!(q.pairs[0].section.as_deref(), Some("Checkpoints"));
    assert_eq!(q.pairs[1].section.as_deref(), Some("Secrets"));

    // The same build again reads every passage back from the cache: no generation at all.
    let again = Scripted::new();
    let q2 = make(&model_opts(), &again, d.path(), &CancelToken::new()).unwrap();
    assert_eq!(again.calls(), 0);
    assert_eq!(q2.pairs, q.pairs);
    assert_eq!(q2.report.total.from_cache, 3);
    // Other grounding settings reuse the cache too; other generation settings do not.
    let strict = QaOptions {
        min_support: 1.0,
        ..model_opts()
    };
    let q3 = make(&strict, &again, d.path(), &CancelToken::new()).unwrap();
    assert_eq!(again.calls(), 0);
    assert_eq!(q3.report.total.dropped[drop_reason::UNSUPPORTED], 2);
    assert_ne!(q3.pairs, q.pairs);
    let more = QaOptions {
        pairs_per_passage: 5,
        ..model_opts()
    };
    make(&more, &again, d.path(), &CancelToken::new()).unwrap();
    assert_eq!(again.calls(), 5);
}

#[test]
fn the_model_check_drops_what_the_generator_rejects_and_is_cached() {
    let d = tempfile::tempdir().unwrap();
    make(
        &model_opts(),
        &Scripted::new(),
        d.path(),
        &CancelToken::new(),
    )
    .unwrap();
    let checked = QaOptions {
        model_check: true,
        ..model_opts()
    };
    let m = Scripted::new();
    let q = make(&checked, &m, d.path(), &CancelToken::new()).unwrap();
    // Pairs come from the cache; only the verdicts are asked (one per parsed pair).
    assert_eq!(m.calls(), 5);
    let r = &q.report.total;
    assert_eq!(r.dropped[drop_reason::MODEL_SAYS_NO], 1);
    assert_eq!(r.kept, 2);
    assert!(q
        .pairs
        .iter()
        .all(|p| !p.answer.starts_with("Tokens never")));
    let m2 = Scripted::new();
    make(&checked, &m2, d.path(), &CancelToken::new()).unwrap();
    assert_eq!(m2.calls(), 0, "verdicts are cached with the pairs");
}

#[test]
fn a_cancelled_build_continues_where_it_stopped() {
    let full = tempfile::tempdir().unwrap();
    let expected = make(
        &model_opts(),
        &Scripted::new(),
        full.path(),
        &CancelToken::new(),
    )
    .unwrap();

    let d = tempfile::tempdir().unwrap();
    let cancel = CancelToken::new();
    let m = Scripted {
        calls: AtomicUsize::new(0),
        cancel_at: Some((4, cancel.clone())),
    };
    // Calls 1–2: the first passage (retried); call 3: the second; call 4 is cancelled.
    let e = make(&model_opts(), &m, d.path(), &cancel).unwrap_err();
    assert!(matches!(e, DatasetError::Cancelled), "{e}");
    assert_eq!(QaCache::at(d.path()).len(), 2);

    let resumed = Scripted::new();
    let q = make(&model_opts(), &resumed, d.path(), &CancelToken::new()).unwrap();
    assert_eq!(resumed.calls(), 2, "only the last passage is generated");
    assert_eq!(q.report.total.from_cache, 2);
    assert_eq!(q.pairs, expected.pairs);
}

#[test]
fn the_template_path_needs_no_model_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    let opts = QaOptions {
        passage_tokens: 64,
        overlap_tokens: 8,
        ..QaOptions::default()
    };
    let q = make_pairs(
        &[guide()],
        &opts,
        None,
        &QaCache::at(d.path()),
        &words,
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(q.report.generator, "template");
    let questions: Vec<&str> = q.pairs.iter().map(|p| p.question.as_str()).collect();
    assert!(
        questions.contains(&"What is a checkpoint?"),
        "{questions:?}"
    );
    assert!(
        q.pairs
            .iter()
            .any(|p| p.origin == PairOrigin::Heading && p.question.contains("Secrets")),
        "{questions:?}"
    );
    assert!(q.report.by_origin.contains_key("definition"));
    assert!(q.report.by_origin.contains_key("heading"));
    assert!(QaCache::at(d.path()).is_empty(), "templates cache nothing");
    // A template build asked to use a model, or the reverse, is refused.
    let e = make_pairs(
        &[guide()],
        &model_opts(),
        None,
        &QaCache::at(d.path()),
        &words,
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("disagree"), "{e}");
}

fn qa_build(
    out: &Path,
    id: &str,
    pairs: QaPairs,
    val_fraction: f64,
) -> doctune_dataset::BuildReport {
    let model = fixtures().join("models/llama3.1");
    let tok = ModelTokenizer::load(&model).unwrap();
    let opts = BuildOptions {
        mode: Mode::Qa,
        seq_len: 256,
        val_fraction,
        qa: model_opts(),
        ..BuildOptions::default()
    };
    build(
        out,
        id,
        &model,
        &tok,
        &Inputs::Pairs(Box::new(pairs)),
        &opts,
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap()
}

/// The scripted generator's pairs, and the dataset they make in `dir/datasets/qa`.
fn scripted_dataset(dir: &Path) -> (QaPairs, PathBuf, doctune_dataset::BuildReport) {
    let q = make(
        &model_opts(),
        &Scripted::new(),
        &dir.join("cache"),
        &CancelToken::new(),
    )
    .unwrap();
    let out = dir.join("datasets");
    std::fs::create_dir_all(&out).unwrap();
    let r = qa_build(&out, "qa", q.clone(), 0.0);
    (q, out, r)
}

#[test]
fn pairs_become_an_instruction_dataset_with_their_sources() {
    let d = tempfile::tempdir().unwrap();
    let (q, out, r) = scripted_dataset(d.path());
    assert_eq!(r.meta.stats.train_examples, 3);
    assert_eq!(r.meta.stats.split_unit, "passage");
    assert_eq!(r.meta.qa.as_ref().unwrap().total.kept, 3);
    assert_eq!(r.meta.sources[0].name, "guide.md");
    assert_eq!(r.meta.sources[0].sha256, "ab".repeat(32));
    let ds = DatasetDir::open(&r.dir).unwrap();
    let pairs = ds.read_pairs().unwrap();
    let passages = ds.read_passages().unwrap();
    assert_eq!(pairs.len(), 3);
    assert_eq!(passages.len(), 3);
    for rec in preview(&r.dir, 10).unwrap() {
        let src = rec.source.expect("every example names its pair");
        let pair = &pairs[src.pair];
        assert_eq!(passages[src.passage].text, q.passages[pair.passage].text);
        // Rendered with the trained model's template; loss on the answer only.
        assert!(rec
            .text
            .contains("<|start_header_id|>user<|end_header_id|>"));
        let chars: Vec<char> = rec.text.chars().collect();
        let trained: String = rec
            .spans
            .iter()
            .flat_map(|&(a, b)| chars[a..b].iter())
            .collect();
        assert_eq!(trained, format!("{}<|eot_id|>", pair.answer));
        assert_eq!(pair.split.as_deref(), Some("train"));
    }

    // With a validation split, the pairs of one passage stay together.
    let r = qa_build(&out, "qa-split", q, 0.5);
    let pairs = DatasetDir::open(&r.dir).unwrap().read_pairs().unwrap();
    for a in &pairs {
        for b in &pairs {
            if a.passage == b.passage {
                assert_eq!(a.split, b.split);
            }
        }
    }
}

#[test]
fn exported_pairs_are_reimported_as_instruction_data() {
    let d = tempfile::tempdir().unwrap();
    let (_, out, r) = scripted_dataset(d.path());
    let model = fixtures().join("models/llama3.1");
    let tok = ModelTokenizer::load(&model).unwrap();
    for (format, name) in [
        (PairFormat::Alpaca, "alpaca"),
        (PairFormat::Messages, "messages"),
    ] {
        let file = d.path().join(format!("{name}.jsonl"));
        assert_eq!(export_pairs(&r.dir, format, &file).unwrap(), 3);
        let text = std::fs::read_to_string(&file).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["source"]["document"], "guide.md");
        assert_eq!(first["source"]["section"], "Checkpoints");
        // The user edits the file (drops a pair) and builds it as instruction data.
        let edited: Vec<&str> = text.lines().skip(1).collect();
        std::fs::write(&file, edited.join("\n")).unwrap();
        let opts = BuildOptions {
            mode: Mode::Instruct,
            seq_len: 256,
            val_fraction: 0.0,
            ..BuildOptions::default()
        };
        let re = build(
            &out,
            &format!("re-{name}"),
            &model,
            &tok,
            &Inputs::Files(vec![file.clone()]),
            &opts,
            &NullSink,
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!(re.meta.stats.train_examples, 2, "{name}");
        assert_eq!(re.meta.stats.bad_rows, 0, "{name}");
    }
    // Not a question–answer dataset: a clear error.
    let e = export_pairs(
        &out.join("re-alpaca"),
        PairFormat::Alpaca,
        &d.path().join("x"),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("not a question-answer dataset"),
        "{e}"
    );
}
