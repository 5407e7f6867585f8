//! The `doctune` binary end to end: exit codes, one-line errors, `--json` shapes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::doctune;

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

#[test]
fn project_new_list_add_show() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    let o = doctune(&home, &["project", "new", "Field Notes", "--json"]);
    assert!(o.status.success(), "{o:?}");
    let p = json(&o);
    assert_eq!(p["id"], "field-notes");
    let dir = p["path"].as_str().unwrap().to_string();

    let o = doctune(&home, &["--json", "project", "list"]);
    assert_eq!(json(&o).as_array().unwrap().len(), 1);
    let o = doctune(&home, &["project", "list"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Field Notes"));

    let f = d.path().join("a.txt");
    std::fs::write(&f, "hello").unwrap();
    let o = doctune(
        &home,
        &["add", "--project", &dir, f.to_str().unwrap(), "--json"],
    );
    assert!(o.status.success(), "{o:?}");
    let r = json(&o);
    assert_eq!(r["added"][0]["name"], "a.txt");
    assert_eq!(r["added"][0]["format"], "text");
    assert_eq!(r["added"][0]["sizeBytes"], 5);

    // By name, and a duplicate is not an error.
    let o = doctune(
        &home,
        &["add", "--project", "Field Notes", f.to_str().unwrap()],
    );
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("duplicate"));

    let o = doctune(&home, &["project", "show", "field-notes", "--json"]);
    assert_eq!(json(&o)["documents"].as_array().unwrap().len(), 1);
}

#[test]
fn errors_exit_non_zero_with_one_line_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    doctune(&home, &["project", "new", "p"]);
    let missing = d.path().join("missing.pdf");
    let o = doctune(&home, &["add", "--project", "p", missing.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.trim(),
        format!("doctune: {}: no such file or folder", missing.display())
    );

    let o = doctune(
        &home,
        &["add", "--project", "p", missing.to_str().unwrap(), "--json"],
    );
    assert!(!o.status.success());
    assert_eq!(json(&o)["failed"][0]["code"], "notFound");

    let o = doctune(&home, &["add", "--project", "nope", "x"]);
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "doctune: nope: no such project folder or project name"
    );
    let o = doctune(&home, &["--json", "project", "new", "  "]);
    assert!(!o.status.success());
    assert_eq!(json(&o)["error"]["code"], "invalidInput");
}

#[test]
fn control_characters_from_file_names_never_reach_the_terminal() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    doctune(&home, &["project", "new", "p"]);
    // A title-changing OSC sequence, a C1 control and a bidi override in one file name.
    let f = d
        .path()
        .join("report\u{1b}]0;pwned\u{7}\u{9b}2J\u{202e}txt.md");
    std::fs::write(&f, "# Notes\n\nHello.\n").unwrap();
    let missing = d.path().join("gone\u{1b}[31m.pdf");
    for args in [
        vec!["add", "--project", "p", f.to_str().unwrap()],
        vec![
            "add",
            "--project",
            "p",
            f.to_str().unwrap(),
            missing.to_str().unwrap(),
        ],
        vec!["ingest", "--project", "p"],
        vec!["project", "show", "p"],
    ] {
        let o = doctune(&home, &args);
        for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !text.contains(['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}']),
                "{args:?} {stream}: {text:?}"
            );
        }
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if args.len() == 5 {
            // The file's path is shown, escaped (the second add: a duplicate and a missing file).
            assert!(all.contains("\\u001b"), "{args:?}: {all}");
        }
    }
    // --json keeps the name exact, as JSON escapes.
    let o = doctune(&home, &["--json", "project", "show", "p"]);
    assert!(!o.stdout.contains(&0x1b));
    let v = json(&o);
    assert!(v["documents"][0]["source"]
        .as_str()
        .is_some_and(|p| p.contains('\u{1b}')));
}

#[test]
fn doctor_prints_every_reading() {
    let d = tempfile::tempdir().unwrap();
    let o = doctune(d.path(), &["doctor"]);
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    for label in ["OS", "CPU", "RAM", "Disk", "GPU", "Keychain"] {
        assert!(
            out.lines().any(|l| l.starts_with(label)),
            "{label} missing in\n{out}"
        );
    }
    let o = doctune(d.path(), &["doctor", "--json"]);
    let j = json(&o);
    assert!(j["system"]["totalMemoryBytes"].as_u64().unwrap() > 0);
    assert!(j["keychain"]["reachable"].is_boolean());
}

#[test]
fn ingest_adds_extracts_caches_and_reports_per_file() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    doctune(&home, &["project", "new", "p"]);
    let md = d.path().join("notes.md");
    std::fs::write(&md, "# Bees\n\nThey dance to show where the flowers are.\n").unwrap();
    let empty = d.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let o = doctune(
        &home,
        &[
            "ingest",
            "--project",
            "p",
            md.to_str().unwrap(),
            empty.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(!o.status.success(), "the empty file is an error");
    let records = json(&o);
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 2);
    let ok = records
        .iter()
        .find(|r| r["path"] == md.to_str().unwrap())
        .unwrap();
    assert_eq!(ok["status"], "ok");
    assert_eq!(ok["format"], "markdown");
    assert_eq!(
        ok["chars"],
        "Bees\n\nThey dance to show where the flowers are."
            .chars()
            .count()
    );
    assert_eq!(ok["cached"], false);
    let bad = records
        .iter()
        .find(|r| r["path"] == empty.to_str().unwrap())
        .unwrap();
    assert_eq!(bad["status"], "error");
    assert_eq!(
        bad["error"],
        format!("{}: the file is empty", empty.display())
    );

    // Again: the Markdown is cached now, nothing left to extract.
    let o = doctune(
        &home,
        &["ingest", "--project", "p", md.to_str().unwrap(), "--json"],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(json(&o)[0]["cached"], true);
    let o = doctune(&home, &["project", "show", "p", "--json"]);
    let docs = json(&o)["documents"].clone();
    let with = docs
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "notes.md")
        .unwrap();
    assert_eq!(with["extraction"]["status"], "ok");
}

/// The i64 tensor `key` of a tiny model's goldens (made by transformers).
fn golden_ids(model: &Path, key: &str) -> Vec<u64> {
    let bytes = std::fs::read(model.join("golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(key)
        .unwrap()
        .data()
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u64)
        .collect()
}

#[test]
fn generate_json_matches_transformers_greedy() {
    let d = tempfile::tempdir().unwrap();
    let fixtures = Path::new(&crate_dir()).join("../doctune-models/tests/fixtures");
    for name in ["llama", "gemma2", "phi3"] {
        let model = fixtures.join(name);
        let o = doctune(
            d.path(),
            &[
                "generate",
                "--model",
                model.to_str().unwrap(),
                "--prompt",
                "The quick brown fox reads a document about models",
                "--max-new-tokens",
                "32",
                "--greedy",
                "--json",
            ],
        );
        assert!(o.status.success(), "{o:?}");
        let v = json(&o);
        let ids: Vec<u64> = v["tokenIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(ids, golden_ids(&model, "greedy_ids"), "{name}");
        assert!(v["text"].is_string());
    }
    // Plain output streams the text; errors are one line naming the folder.
    let model = fixtures.join("qwen2");
    let o = doctune(
        d.path(),
        &[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "Hi",
            "--chat",
            "--max-new-tokens",
            "4",
            "--temperature",
            "0.7",
            "--seed",
            "3",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("4 tokens"),
        "{o:?}"
    );
    let o = doctune(
        d.path(),
        &["generate", "--model", "/no/such/model", "--prompt", "Hi"],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/no/such/model") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn dataset_build_and_preview() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    let o = doctune(&home, &["project", "new", "Notes", "--json"]);
    let project = json(&o)["path"].as_str().unwrap().to_string();
    let model = Path::new(&crate_dir()).join("../doctune-models/tests/fixtures/qwen3");
    let input = d.path().join("qa.jsonl");
    std::fs::write(
        &input,
        "{\"conversations\":[{\"from\":\"human\",\"value\":\"What is DocTune?\"},{\"from\":\"gpt\",\"value\":\"A local app.\"}]}\n{\"conversations\":[{\"from\":\"alien\",\"value\":\"?\"}]}\n",
    )
    .unwrap();
    let args = |extra: &[&str]| {
        let mut v = vec![
            "dataset",
            "build",
            "--project",
            project.as_str(),
            "--model",
            model.to_str().unwrap(),
            "--mode",
            "instruct",
            "--input",
            input.to_str().unwrap(),
            "--val-fraction",
            "0",
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let a = args(&["--json"]);
    let o = doctune(&home, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{o:?}");
    let ds = json(&o);
    assert_eq!(ds["meta"]["stats"]["trainExamples"], 1);
    assert_eq!(ds["meta"]["badRows"][0]["line"], 2);
    let dir = ds["path"].as_str().unwrap().to_string();

    let o = doctune(
        &home,
        &[
            "dataset",
            "preview",
            "--dataset",
            &dir,
            "--n",
            "1",
            "--json",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let p = json(&o);
    let text = p[0]["text"].as_str().unwrap();
    let chars: Vec<char> = text.chars().collect();
    let span = &p[0]["spans"][0];
    let (a, b) = (
        span[0].as_u64().unwrap() as usize,
        span[1].as_u64().unwrap() as usize,
    );
    assert_eq!(
        chars[a..b].iter().collect::<String>(),
        "A local app.<|im_end|>\n"
    );
    assert!(text.starts_with("<|im_start|>user\nWhat is DocTune?"));

    // --on-bad-row stop: one line naming the file and the line.
    let a = args(&["--on-bad-row", "stop"]);
    let o = doctune(&home, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("qa.jsonl: line 2: message 1: unknown role `alien`"),
        "{err}"
    );
    let o = doctune(&home, &["dataset", "list", "--project", &project]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("instruct-"));
}

/// `kill -9` in the middle of a run, then `train resume`: the adapter is bit-identical to a run
/// that was never interrupted.
#[test]
fn train_killed_and_resumed_matches_an_uninterrupted_run() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    let o = doctune(&home, &["project", "new", "T", "--json"]);
    let project = json(&o)["path"].as_str().unwrap().to_string();
    let model = Path::new(&crate_dir()).join("../doctune-models/tests/fixtures/qwen3");
    let input = d.path().join("qa.jsonl");
    let rows: String = (0..40)
        .map(|i| {
            format!(
                "{{\"instruction\":\"What is {i} plus {i}?\",\"output\":\"It is {}.\"}}\n",
                2 * i
            )
        })
        .collect();
    std::fs::write(&input, rows).unwrap();
    let o = doctune(
        &home,
        &[
            "dataset",
            "build",
            "--project",
            &project,
            "--model",
            model.to_str().unwrap(),
            "--mode",
            "instruct",
            "--input",
            input.to_str().unwrap(),
            "--seq-len",
            "64",
            "--json",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let dataset = json(&o)["id"].as_str().unwrap().to_string();
    let args = [
        "train",
        "--project",
        &project,
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        &dataset,
        "--steps",
        "300",
        "--checkpoint-every",
        "5",
        "--micro-batch",
        "2",
        "--lr",
        "0.005",
        "--lora-targets",
        "q,v,down",
        "--threads",
        "1",
    ];

    let straight = doctune(&home, &[&args[..], &["--json"]].concat());
    assert!(straight.status.success(), "{straight:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&straight.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let straight_dir = PathBuf::from(lines[0]["runDir"].as_str().unwrap());
    assert!(lines.iter().any(|l| l["type"] == "metrics"));
    assert_eq!(lines.last().unwrap()["steps"], 300);

    // The same run, killed with SIGKILL once its first checkpoints exist.
    let mut child = Command::new(env!("CARGO_BIN_EXE_doctune"))
        .args(args)
        .env("DOCTUNE_HOME", &home)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let runs = Path::new(&project).join("runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let killed_dir = loop {
        let found = std::fs::read_dir(&runs).ok().and_then(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .find(|p| p != &straight_dir && p.join("checkpoints/step-00000010").is_dir())
        });
        if let Some(dir) = found {
            break dir;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before it could be killed"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!killed_dir.join("adapter").exists());

    let o = doctune(
        &home,
        &[
            "train",
            "resume",
            killed_dir.to_str().unwrap(),
            "--threads",
            "1",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let read = |dir: &Path| std::fs::read(dir.join("adapter/adapter_model.safetensors")).unwrap();
    assert_eq!(
        read(&straight_dir),
        read(&killed_dir),
        "resumed adapter differs"
    );

    let o = doctune(&home, &["runs", "list", "--project", &project, "--json"]);
    let runs = json(&o);
    assert_eq!(runs.as_array().unwrap().len(), 2);
    assert!(runs.as_array().unwrap().iter().all(|r| r["steps"] == 300));

    // The run exports as GGUF + Modelfile; the report is one JSON object naming every file.
    let o = doctune(
        &home,
        &[
            "export",
            "--run",
            straight_dir.to_str().unwrap(),
            "--format",
            "ollama",
            "--quant",
            "q8_0",
            "--json",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let r = json(&o);
    assert_eq!(r["format"], "ollama");
    let files: Vec<&str> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(files.iter().any(|f| f.ends_with("-Q8_0.gguf")), "{files:?}");
    assert!(files.contains(&"Modelfile") && files.contains(&"README.md"));
    assert!(r["ollamaCreate"]
        .as_str()
        .unwrap()
        .starts_with("ollama create"));
    let o = doctune(
        &home,
        &[
            "export",
            "--run",
            straight_dir.to_str().unwrap(),
            "--format",
            "gguf",
            "--quant",
            "q3_k",
        ],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown quantisation `q3_k`"),
        "{o:?}"
    );

    // Devices and precisions this build or the CPU cannot train with are refused by name:
    // bf16 on a CPU without AVX-512 BF16 (the system check says which this one is), and full
    // training in bf16 on any CPU (it has no frozen weights to keep in bf16).
    let doctor = json(&doctune(&home, &["doctor", "--json"]));
    let cpu_bf16 = doctor["devices"][0]["precisions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "bf16");
    let refused = |extra: &[&str], want: &[&str]| {
        let o = doctune(
            &home,
            &[&args[..], &["--precision", "bf16"], extra].concat(),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && want.iter().all(|w| err.contains(w)),
            "{err}"
        );
        // Refused before a run folder is announced.
        assert!(o.stdout.is_empty(), "{o:?}");
    };
    if !cpu_bf16 {
        refused(&[], &["AVX-512 BF16", "f32"]);
    }
    refused(&["--method", "full"], &["bf16", "f32"]);
    if !cfg!(feature = "cuda") {
        let o = doctune(&home, &[&args[..], &["--device", "cuda"]].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("--features cuda"),
            "{err}"
        );
    }
    let o = doctune(&home, &[&args[..], &["--device", "tpu"]].concat());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown device `tpu`"));
    let o = doctune(&home, &["runs", "list", "--project", &project, "--json"]);
    assert_eq!(
        json(&o).as_array().unwrap().len(),
        2,
        "a refused run left a folder"
    );
}

/// This crate's folder, read when the test runs (cargo sets it then too): a test binary that
/// cargo reuses from a build in another checkout sharing the target folder must read this
/// checkout's fixtures, not that one's.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
