//! The built-in demo and `train --method scratch` end to end, through the binary: the demo's
//! outputs (a GGUF DocTune's reader opens, a Modelfile, a merged folder that loads), its loss
//! below both baselines, its reuse of what it made; and the committed demo corpus being what
//! its script makes.

use std::path::Path;
use std::process::Output;

mod support;
use support::doctune;

/// The last line of stdout, as JSON (`--json` prints events first, then the result).
fn last_json(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Steps small enough for CI and enough to pass the unigram baseline (about a minute on two
/// cores; the default, 240, is the README's demo).
const CI_STEPS: &str = "100";

#[test]
fn the_demo_trains_exports_and_beats_both_baselines_then_reuses_everything() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("demo");
    let o = doctune(
        &d.path().join("unused-home"),
        &[
            "demo",
            "--out",
            out.to_str().unwrap(),
            "--steps",
            CI_STEPS,
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = last_json(&o);
    // Progress came first, one event per line, stages among them.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.lines().any(|l| l.contains("\"stages\"")), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.contains("\"metrics\"")),
        "{stdout}"
    );

    let val = r["valLoss"].as_f64().unwrap();
    let unigram = r["unigramEntropy"].as_f64().unwrap();
    let untrained = r["untrainedLoss"].as_f64().unwrap();
    assert!(val < unigram && unigram < untrained, "{r}");
    assert_eq!(r["steps"], 100);
    assert_eq!(r["documents"], 8);
    let params = r["parameters"].as_u64().unwrap();
    assert!((4_000_000..10_000_000).contains(&params), "{params}");
    assert!(!r["sample"].as_str().unwrap().trim().is_empty(), "{r}");
    assert!(r["reused"].as_array().unwrap().is_empty(), "{r}");
    assert!(r["projectDir"]
        .as_str()
        .unwrap()
        .starts_with(out.to_str().unwrap()));

    // The GGUF opens with the reader DocTune's export tests use, and holds the whole model.
    let gguf = Path::new(r["gguf"].as_str().unwrap());
    let mut f = std::fs::File::open(gguf).unwrap();
    let c = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    assert_eq!(
        c.metadata["general.architecture"].to_string().unwrap(),
        "llama"
    );
    assert_eq!(
        c.metadata["tokenizer.ggml.tokens"].to_vec().unwrap().len(),
        r["vocabSize"].as_u64().unwrap() as usize
    );
    assert!(c.tensor_infos.contains_key("blk.5.ffn_down.weight"));
    let modelfile = std::fs::read_to_string(r["modelfile"].as_str().unwrap()).unwrap();
    assert!(modelfile.contains("FROM ./"), "{modelfile}");
    assert!(r["ollamaCreate"]
        .as_str()
        .unwrap()
        .starts_with("ollama create doctune-demo -f "));

    // The merged folder is a model `doctune generate` runs.
    let merged = r["mergedDir"].as_str().unwrap();
    let o = doctune(
        &out,
        &[
            "generate",
            "--model",
            merged,
            "--prompt",
            "A project",
            "--max-new-tokens",
            "8",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Again: everything is reused, nothing retrained, the same figures.
    let o = doctune(
        &d.path().join("unused-home"),
        &[
            "demo",
            "--out",
            out.to_str().unwrap(),
            "--steps",
            CI_STEPS,
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again = last_json(&o);
    let reused: Vec<&str> = again["reused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for stage in ["project", "documents", "model", "dataset", "training"] {
        assert!(reused.contains(&stage), "{reused:?}");
    }
    assert_eq!(again["valLoss"], r["valLoss"]);
    assert_eq!(again["gguf"], r["gguf"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("\"metrics\""));
}

#[test]
fn train_method_scratch_makes_a_model_from_the_projects_documents() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    assert!(doctune(&home, &["project", "new", "Notes"])
        .status
        .success());
    let docs = doctune_testkit::demo_corpus::corpus_dir();
    let o = doctune(
        &home,
        &[
            "ingest",
            "--project",
            "Notes",
            docs.join("03-datasets.md").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = doctune(
        &home,
        &[
            "train",
            "--project",
            "Notes",
            "--method",
            "scratch",
            "--vocab-size",
            "400",
            "--seq-len",
            "32",
            "--steps",
            "3",
            "--micro-batch",
            "2",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = last_json(&o);
    assert_eq!(summary["steps"], 3);

    // The new model is in the library, marked as made from the project's documents.
    let o = doctune(&home, &["model", "list", "--json"]);
    let models: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = &models[0];
    assert_eq!(m["source"]["kind"], "scratch");
    assert_eq!(m["source"]["project"], "Notes");
    assert_eq!(m["source"]["documents"], 1);
    assert_eq!(m["family"], "llama");
    let dir = Path::new(m["path"].as_str().unwrap());
    for f in [
        "config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "model.safetensors",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    // Every weight was trained: the run is a full one on that model.
    let run = Path::new(summary["runDir"].as_str().unwrap());
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["hidden_size"], 256, "the tiny preset");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(cfg["config"]["method"]["kind"], "full");
}

#[test]
fn explicit_dimensions_and_their_mistakes() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    assert!(doctune(&home, &["project", "new", "Notes"])
        .status
        .success());
    let docs = doctune_testkit::demo_corpus::corpus_dir();
    let doc = docs.join("04-training.md");
    assert!(doctune(
        &home,
        &["ingest", "--project", "Notes", doc.to_str().unwrap()]
    )
    .status
    .success());
    let train = |dims: &str| {
        doctune(
            &home,
            &[
                "train",
                "--project",
                "Notes",
                "--method",
                "scratch",
                "--dims",
                dims,
                "--vocab-size",
                "400",
                "--seq-len",
                "32",
                "--steps",
                "1",
                "--micro-batch",
                "2",
            ],
        )
    };
    let o = train("64,2,4,2,128,64");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = doctune(&home, &["model", "list", "--json"]);
    let models: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(models[0]["source"]["size"], "custom");
    let dir = Path::new(models[0]["path"].as_str().unwrap());
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (
            cfg["hidden_size"].as_u64(),
            cfg["num_hidden_layers"].as_u64(),
            cfg["num_key_value_heads"].as_u64()
        ),
        (Some(64), Some(2), Some(2))
    );
    for (bad, says) in [
        ("64,2,4", "six numbers"),
        ("64,2,3,1,128,64", "heads"),
        ("x,2,4,2,128,64", "whole numbers"),
    ] {
        let o = train(bad);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{bad}: {err}"
        );
    }
}

#[test]
fn the_committed_demo_corpus_is_what_its_script_makes() {
    use doctune_testkit::demo_corpus::{corpus_dir, docx, pages, pdf, DOCX_NAME, PDF_NAME};
    let dir = corpus_dir();
    let pages = pages(&dir).unwrap();
    assert_eq!(pages.len(), 6);
    let fix = "run `cargo run -p doctune-testkit --bin make-demo-corpus` and commit the result";
    assert!(
        std::fs::read(dir.join(PDF_NAME)).unwrap() == pdf(&pages),
        "{PDF_NAME} is stale: {fix}"
    );
    assert!(
        std::fs::read(dir.join(DOCX_NAME)).unwrap() == docx(&pages),
        "{DOCX_NAME} is stale: {fix}"
    );
    // And the binary embeds exactly these files.
    for (name, bytes) in doctune_api::demo::DOCUMENTS {
        assert_eq!(std::fs::read(dir.join(name)).unwrap(), *bytes, "{name}");
    }
}
