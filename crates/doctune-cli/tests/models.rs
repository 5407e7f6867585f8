//! `doctune model …` and `doctune token …` end to end, against a loopback server in the Hub's
//! layout (`HF_ENDPOINT`). The token tests need a real, unlocked OS keychain and are built with
//! `--features keychain-tests` (scripts/test runs them inside a throwaway gnome-keyring).

use doctune_testkit::hub as support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::{tiny_llama, write_folder, FakeHub};

fn doctune(home: &Path, hub: &FakeHub, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_doctune"))
        .args(args)
        .env("DOCTUNE_HOME", home)
        .env("HF_ENDPOINT", &hub.endpoint)
        .env("DOCTUNE_LOG", "trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

fn last_stderr_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

#[test]
fn pull_import_and_list() {
    let hub = FakeHub::start();
    hub.add_files("org/tiny", tiny_llama(2));
    hub.add_files("org/pickle", support::pickle_only());
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");

    let o = doctune(&home, &hub, &["model", "pull", "org/tiny", "--json"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = json(&o);
    assert_eq!(m["name"], "org/tiny");
    assert_eq!(m["family"], "llama");
    assert_eq!(m["source"]["kind"], "hub");
    assert_eq!(m["source"]["commit"].as_str().unwrap().len(), 40);
    assert!(Path::new(m["path"].as_str().unwrap())
        .join("config.json")
        .is_file());

    let o = doctune(&home, &hub, &["model", "pull", "org/pickle"], None);
    assert!(!o.status.success());
    assert_eq!(
        last_stderr_line(&o),
        "doctune: org/pickle: has only PyTorch pickle weights (pytorch_model.bin), which can run code when loaded; DocTune loads only safetensors. Look for a version of this model that ships .safetensors files"
    );

    let folder = d.path().join("my-model");
    write_folder(&folder, &tiny_llama(1));
    std::fs::write(folder.join("pytorch_model.bin"), b"\x80\x02").unwrap();
    let o = doctune(
        &home,
        &hub,
        &[
            "model",
            "import",
            folder.to_str().unwrap(),
            "--copy",
            "--json",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = json(&o);
    assert_eq!(
        m["source"],
        serde_json::json!({"kind": "local", "from": folder.to_str().unwrap(), "copied": true})
    );
    let copied = Path::new(m["path"].as_str().unwrap());
    assert!(copied.starts_with(home.join("models").canonicalize().unwrap()));
    assert!(
        !copied.join("pytorch_model.bin").exists(),
        "pickles are never copied"
    );
    assert!(copied.join("model.safetensors").is_file());

    let bad = d.path().join("not-a-model");
    std::fs::create_dir_all(&bad).unwrap();
    let o = doctune(
        &home,
        &hub,
        &["model", "import", bad.to_str().unwrap()],
        None,
    );
    assert!(!o.status.success());
    assert_eq!(
        last_stderr_line(&o),
        format!(
            "doctune: {}: no config.json; not a Hugging Face model folder",
            bad.display()
        )
    );

    let o = doctune(&home, &hub, &["model", "list", "--json"], None);
    let list = json(&o);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["name"], "my-model", "newest first");
    // The family's name for people comes from Rust (the UI has no table of its own).
    assert_eq!(list[0]["familyLabel"], "Llama");
}

#[cfg(feature = "keychain-tests")]
#[test]
fn the_token_is_used_and_appears_in_no_file_log_or_output() {
    const TOKEN: &str = "hf_doctuneSECRETtoken0123456789";
    let hub = FakeHub::start();
    hub.add_repo(
        "org/gated",
        support::FakeRepo {
            files: tiny_llama(1),
            token: Some(TOKEN.into()),
            ..Default::default()
        },
    );
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    let mut outputs = Vec::new();

    let o = doctune(&home, &hub, &["token", "delete"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = doctune(&home, &hub, &["model", "pull", "org/gated"], None);
    assert_eq!(
        last_stderr_line(&o),
        "doctune: org/gated: this model needs an access token: add one in Settings"
    );
    outputs.push(o);

    let o = doctune(&home, &hub, &["token", "set"], Some(&format!("{TOKEN}\n")));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    outputs.push(o);
    let o = doctune(&home, &hub, &["token", "status", "--json"], None);
    assert_eq!(json(&o)["stored"], true);
    outputs.push(o);
    let o = doctune(&home, &hub, &["token", "test", "--json"], None);
    assert_eq!(json(&o)["name"], "tester");
    outputs.push(o);
    let o = doctune(&home, &hub, &["model", "pull", "org/gated", "--json"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    outputs.push(o);
    let o = doctune(&home, &hub, &["doctor", "--json"], None);
    outputs.push(o);

    for o in &outputs {
        for stream in [&o.stdout, &o.stderr] {
            assert!(
                !String::from_utf8_lossy(stream).contains("SECRET"),
                "the token leaked into output"
            );
        }
    }
    let mut files = 0;
    for path in walk(&home) {
        files += 1;
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token is in {}",
            path.display()
        );
    }
    assert!(files > 5, "the pull wrote files ({files})");

    let o = doctune(&home, &hub, &["token", "delete"], None);
    assert!(o.status.success());
    let o = doctune(&home, &hub, &["token", "status", "--json"], None);
    assert_eq!(json(&o)["stored"], false);
}

#[cfg(feature = "keychain-tests")]
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            out.extend(walk(&p));
        } else if meta.is_file() {
            out.push(p);
        }
    }
    out
}
