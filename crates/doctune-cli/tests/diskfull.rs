//! A full disk, for real: the pipeline on a small tmpfs mounted in a private user and mount
//! namespace (`unshare -rm`, so no privilege is needed and nothing outside the test sees it).
//! Each large write — the text cache, a dataset, a checkpoint, an export — is tried with the disk
//! almost full, twice: with the free space known (the check before writing refuses) and with it
//! unknown (`DOCTUNE_FREE_SPACE=unknown`: the write itself runs out of space). Both times the
//! command ends with one clear `noSpace` error, exit code 1, and the previous state — the
//! project file, earlier datasets and exports — is byte for byte what it was, with no partial
//! file or folder left behind.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INNER: &str = "DOCTUNE_DISKFULL_INNER";

#[test]
fn a_full_disk_stops_each_large_write_clearly_and_keeps_the_previous_state() {
    if std::env::var_os(INNER).is_none() {
        // Run this same test again inside the namespace, where it may mount.
        let o = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_full_disk_stops_each_large_write_clearly_and_keeps_the_previous_state",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(INNER, "1")
            .output()
            .expect("unshare (util-linux) runs this test in a private mount namespace");
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(o.status.success(), "inside the namespace:\n{out}\n{err}");
        assert!(
            out.contains("1 passed"),
            "the inner test did not run:\n{out}\n{err}"
        );
        return;
    }
    inner();
}

fn doctune(home: &Path, unknown: bool, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_doctune"));
    c.args(args)
        .env("DOCTUNE_HOME", home)
        .env_remove("DOCTUNE_LOG")
        .env_remove("DOCTUNE_FREE_SPACE");
    if unknown {
        c.env("DOCTUNE_FREE_SPACE", "unknown");
    }
    c.output().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    // One document, or one per line (events, then the result or the error) where it streams.
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(text.lines().last().unwrap_or("")))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{o:?}");
    o
}

/// The command failed as a full disk should: exit code 1, no signal, a `noSpace` error.
fn no_space(o: &Output, what: &str) {
    assert_eq!(o.status.code(), Some(1), "{what}: {o:?}");
    let err = json(o);
    assert_eq!(err["error"]["code"], "noSpace", "{what}: {err}");
    let message = err["error"]["message"].as_str().unwrap();
    eprintln!("{what}: {message}");
    assert!(
        message.contains("No space left on device") || message.contains("free"),
        "{what}: {message}"
    );
}

fn avail(dir: &Path) -> u64 {
    let o = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Fills the disk holding `dir` until `leave` bytes are free (a file `dir/filler`).
fn fill(dir: &Path, leave: u64) {
    let filler = dir.join("filler");
    let _ = std::fs::remove_file(&filler);
    let size = avail(dir).saturating_sub(leave);
    assert!(Command::new("fallocate")
        .args(["-l", &size.to_string()])
        .arg(&filler)
        .status()
        .unwrap()
        .success());
    assert!(avail(dir) <= leave + 4096, "{}", avail(dir));
}

fn unfill(dir: &Path) {
    std::fs::remove_file(dir.join("filler")).unwrap();
}

/// Every file under `dir` with its bytes (links not followed).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == "filler") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                out.push((p.clone(), Vec::new()));
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

fn inner() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    assert!(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=320m", "tmpfs"])
        .arg(&home)
        .status()
        .unwrap()
        .success());
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../doctune-models/tests/fixtures/qwen3");
    let model = model.to_str().unwrap();
    // A document of a few hundred KB of text (outside the small disk).
    let doc = d.path().join("handbook.md");
    let text: String = (0..4000)
        .map(|i| {
            format!(
                "Rule {i}: wear goggles in room {} and log the sample.\n\n",
                i % 17
            )
        })
        .collect();
    std::fs::write(&doc, text).unwrap();

    for unknown in [false, true] {
        let name = if unknown { "unknown" } else { "known" };
        let run = |args: &[&str]| doctune(&home, unknown, args);
        let p = json(&ok(run(&["--json", "project", "new", name])));
        let project = PathBuf::from(p["path"].as_str().unwrap());
        let project_s = project.to_str().unwrap().to_string();
        ok(run(&["add", "--project", name, doc.to_str().unwrap()]));

        // 1. The text cache.
        let before = snapshot(&home);
        fill(&home, 64 << 10);
        let o = run(&["--json", "ingest", "--project", name]);
        no_space(&o, &format!("{name}: ingest"));
        assert_eq!(snapshot(&home), before, "{name}: ingest changed something");
        unfill(&home);
        ok(run(&["ingest", "--project", name]));

        // 2. A dataset.
        let build = [
            "--json",
            "dataset",
            "build",
            "--project",
            &project_s,
            "--model",
            model,
            "--mode",
            "pretrain",
            "--seq-len",
            "64",
        ];
        let before = snapshot(&home);
        fill(&home, 64 << 10);
        no_space(&run(&build), &format!("{name}: dataset build"));
        assert_eq!(
            snapshot(&home),
            before,
            "{name}: dataset build left something"
        );
        unfill(&home);
        let dataset = json(&ok(run(&build)))["id"].as_str().unwrap().to_string();

        // 3. A run and its export, with room.
        let train = [
            "--json",
            "train",
            "--project",
            &project_s,
            "--model",
            model,
            "--dataset",
            &dataset,
            "--steps",
            "2",
            "--checkpoint-every",
            "1",
            "--micro-batch",
            "1",
            "--threads",
            "1",
        ];
        let o = ok(run(&train));
        let run_dir = String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                v["runDir"].as_str().map(str::to_string)
            })
            .unwrap();
        let export = ["--json", "export", "--run", &run_dir, "--format", "peft"];
        ok(run(&export));

        // 4. A run: with the free space known the check refuses its first checkpoint; with it
        // unknown and the disk full to the last byte, its first write fails and the run folder
        // never appears.
        {
            let runs_before: Vec<_> = std::fs::read_dir(project.join("runs"))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            fill(&home, if unknown { 0 } else { 64 << 10 });
            let o = run(&train);
            no_space(&o, &format!("{name}: train"));
            unfill(&home);
            if unknown {
                let runs_after: Vec<_> = std::fs::read_dir(project.join("runs"))
                    .unwrap()
                    .flatten()
                    .map(|e| e.path())
                    .collect();
                assert_eq!(runs_after, runs_before, "unknown: a run folder was left");
            }
            for e in std::fs::read_dir(project.join("runs")).unwrap().flatten() {
                let ckpts = e.path().join("checkpoints");
                for c in std::fs::read_dir(&ckpts).into_iter().flatten().flatten() {
                    assert!(
                        c.path().join("state.json").is_file(),
                        "a partial checkpoint: {}",
                        c.path().display()
                    );
                }
            }
        }

        // 5. A second export of the same run: the first stays whole.
        let before = snapshot(&home);
        fill(&home, 64 << 10);
        let merged = ["--json", "export", "--run", &run_dir, "--format", "merged"];
        no_space(&run(&merged), &format!("{name}: export"));
        assert_eq!(snapshot(&home), before, "{name}: export changed something");
        unfill(&home);
    }
}
