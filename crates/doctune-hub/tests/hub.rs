//! doctune-hub against a loopback server in the Hub's layout, and folder validation.

use doctune_testkit::hub as support;

use doctune_core::{CancelToken, JobEvent, NullSink, VecSink};
use doctune_hub::{inspect_folder, HubClient, HubError};
use doctune_secrets::Sensitive;
use std::path::{Path, PathBuf};
use support::{tiny_llama, write_folder, FakeHub, FakeRepo};

fn client(hub: &FakeHub, cache: &Path, token: Option<&str>, chunk: usize) -> HubClient {
    let token = token.map(|t| Sensitive::new(t.to_string()));
    HubClient::new(Some(hub.endpoint.clone()), cache, token.as_ref(), chunk).unwrap()
}

fn plenty(_: &Path) -> Option<u64> {
    Some(u64::MAX)
}

async fn pull(c: &HubClient, repo: &str) -> Result<doctune_hub::Pulled, HubError> {
    c.pull(repo, "main", &plenty, &NullSink, &CancelToken::new())
        .await
}

fn repo_with_extras() -> FakeRepo {
    let mut files = tiny_llama(2);
    files.push(("pytorch_model.bin".into(), b"\x80\x02pickle".to_vec()));
    files.push(("modeling_custom.py".into(), b"import os".to_vec()));
    files.push(("onnx/model.onnx".into(), b"onnx".to_vec()));
    FakeRepo {
        files,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_only_safe_files_and_verifies_them() {
    let hub = FakeHub::start();
    hub.add_repo("org/tiny", repo_with_extras());
    let d = tempfile::tempdir().unwrap();
    let c = client(&hub, d.path(), None, 1 << 20);
    let sink = VecSink::default();
    let pulled = c
        .pull("org/tiny", "main", &plenty, &sink, &CancelToken::new())
        .await
        .unwrap();
    assert_eq!(pulled.info.architecture, "LlamaForCausalLM");
    assert_eq!(pulled.info.family, doctune_core::Family::Llama);
    assert_eq!(pulled.info.dtype, "F32");
    assert_eq!(
        pulled.info.parameters,
        32 * 8 * 2 + 2 * (64 + 32 + 32 + 64 + 3 * 128 + 16) + 8
    );
    let mut names: Vec<_> = std::fs::read_dir(&pulled.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "README.md",
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    let log = hub.log();
    for never in ["pytorch_model.bin", "modeling_custom.py", "onnx"] {
        assert!(
            !log.iter().any(|l| l.contains(never)),
            "{never} was requested: {log:?}"
        );
    }
    // Progress ends at the total, in bytes.
    let last = sink.events().into_iter().rev().find_map(|e| match e {
        JobEvent::Progress {
            current,
            total,
            unit,
            ..
        } => Some((current, total, unit)),
        _ => None,
    });
    let (current, total, unit) = last.unwrap();
    assert_eq!((current, unit.as_str()), (total, "bytes"));
    assert!(total > 4000);

    // A second pull finds everything in the cache, verifies it, downloads nothing.
    hub.clear_log();
    let again = pull(&c, "org/tiny").await.unwrap();
    assert_eq!(again.downloaded_bytes, 0);
    assert!(
        hub.log().iter().all(|l| l.contains("/api/models/")),
        "{:?}",
        hub.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pickle_only_and_remote_code_repos_are_refused() {
    let hub = FakeHub::start();
    hub.add_files("org/pickle", support::pickle_only());
    let mut remote = tiny_llama(1);
    let cfg = remote.iter_mut().find(|(n, _)| n == "config.json").unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&cfg.1).unwrap();
    v["auto_map"] = serde_json::json!({"AutoModelForCausalLM": "modeling_custom.Model"});
    cfg.1 = serde_json::to_vec(&v).unwrap();
    hub.add_files("org/remote", remote);
    let mut gpt2 = tiny_llama(1);
    let cfg = gpt2.iter_mut().find(|(n, _)| n == "config.json").unwrap();
    cfg.1 = br#"{"architectures": ["GPT2LMHeadModel"]}"#.to_vec();
    hub.add_files("org/gpt2", gpt2);

    let d = tempfile::tempdir().unwrap();
    let c = client(&hub, d.path(), None, 1 << 20);
    let e = pull(&c, "org/pickle").await.unwrap_err();
    assert!(matches!(e, HubError::PickleOnly { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "org/pickle: has only PyTorch pickle weights (pytorch_model.bin), which can run code when loaded; DocTune loads only safetensors. Look for a version of this model that ships .safetensors files"
    );
    assert!(
        !hub.log().iter().any(|l| l.contains("/resolve/")),
        "nothing downloaded"
    );

    hub.clear_log();
    let e = pull(&c, "org/remote").await.unwrap_err();
    assert!(matches!(e, HubError::RemoteCode { .. }), "{e}");
    assert!(e.to_string().contains("auto_map"));
    assert!(
        !hub.log().iter().any(|l| l.contains(".safetensors")),
        "no weights fetched after the config said no"
    );

    let e = pull(&c, "org/gpt2").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("GPT2LMHeadModel is not supported; DocTune supports LlamaForCausalLM"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_shard_is_deleted_and_reported() {
    let hub = FakeHub::start();
    let mut repo = FakeRepo {
        files: tiny_llama(2),
        ..Default::default()
    };
    repo.corrupt
        .insert("model-00002-of-00002.safetensors".into());
    hub.add_repo("org/bad", repo);
    let d = tempfile::tempdir().unwrap();
    let c = client(&hub, d.path(), None, 1 << 20);
    let e = pull(&c, "org/bad").await.unwrap_err();
    match &e {
        HubError::Corrupt {
            file,
            algo,
            expected,
            actual,
            ..
        } => {
            assert_eq!(file, "model-00002-of-00002.safetensors");
            assert_eq!(*algo, "sha256");
            assert_ne!(expected, actual);
        }
        other => panic!("{other}"),
    }
    assert!(e
        .to_string()
        .contains("the downloaded file was deleted, pull again"));
    // Neither the snapshot link nor the blob of the bad shard is left.
    let left: Vec<String> = walk(d.path())
        .into_iter()
        .filter(|p| p.contains("00002-of"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_repos_need_the_token() {
    let hub = FakeHub::start();
    hub.add_repo(
        "org/gated",
        FakeRepo {
            files: tiny_llama(1),
            token: Some("hf_right".into()),
            ..Default::default()
        },
    );
    let d = tempfile::tempdir().unwrap();
    let e = pull(&client(&hub, d.path(), None, 1 << 20), "org/gated")
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "org/gated: this model needs an access token: add one in Settings"
    );
    let e = pull(
        &client(&hub, d.path(), Some("hf_wrong"), 1 << 20),
        "org/gated",
    )
    .await
    .unwrap_err();
    assert!(matches!(e, HubError::AccessDenied { .. }), "{e}");
    assert!(!e.to_string().contains("hf_wrong"));
    let good = client(&hub, d.path(), Some("hf_right"), 1 << 20);
    pull(&good, "org/gated").await.unwrap();
    assert_eq!(good.whoami().await.unwrap(), "tester");
    assert!(matches!(
        client(&hub, d.path(), Some("hf_wrong"), 1).whoami().await,
        Err(HubError::AccessDenied { .. })
    ));
}

/// Runs one pull on a runtime of its own and drops it afterwards, as doctune-api does, so chunk
/// tasks that hf-hub left running after a failure die with it.
fn pull_in_own_runtime(c: &HubClient, repo: &str) -> Result<doctune_hub::Pulled, HubError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(pull(c, repo));
    rt.shutdown_background();
    out
}

/// The bytes a partial download holds (`blobs/<hash>.incomplete`, appended to as they arrive).
fn committed(cache: &Path) -> u64 {
    fn find(dir: &Path) -> Option<PathBuf> {
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                if let Some(f) = find(&p) {
                    return Some(f);
                }
            } else if p.to_string_lossy().ends_with(".incomplete") {
                return Some(p);
            }
        }
        None
    }
    find(cache).map_or(0, |p| std::fs::metadata(p).unwrap().len())
}

#[test]
fn a_dropped_connection_fails_clearly_and_the_next_pull_resumes() {
    let hub = FakeHub::start();
    hub.add_files("org/flaky", tiny_llama(1));
    hub.set_drop("org/flaky", Some(("model.safetensors".into(), 2500)));
    let d = tempfile::tempdir().unwrap();
    let c = client(&hub, d.path(), None, 1024);
    // Bytes are kept as they arrive; try until some arrived before the break (each try resumes
    // the last).
    let mut done = 0;
    for _ in 0..5 {
        let e = pull_in_own_runtime(&c, "org/flaky").unwrap_err();
        assert!(matches!(e, HubError::Interrupted { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("org/flaky: model.safetensors: the download broke off"),
            "{e}"
        );
        assert!(e.to_string().ends_with("pull again to resume"), "{e}");
        done = committed(d.path());
        if done >= 1024 {
            break;
        }
    }
    assert!(done >= 1024, "no chunk was ever committed");

    hub.set_drop("org/flaky", None);
    hub.clear_log();
    let pulled = pull_in_own_runtime(&c, "org/flaky").unwrap();
    assert_eq!(pulled.info.family, doctune_core::Family::Llama);
    // Resumed: no body range of this pull starts before what was already committed.
    let starts: Vec<u64> = hub
        .log()
        .into_iter()
        .filter(|l| l.contains("model.safetensors") && !l.ends_with("bytes=0-0"))
        .filter_map(|l| l.rsplit("bytes=").next()?.split('-').next()?.parse().ok())
        .collect();
    assert!(!starts.is_empty());
    assert!(
        starts.iter().all(|&s| s >= done),
        "restarted below {done}: {starts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_repos_no_network_no_space_and_cancel() {
    let hub = FakeHub::start();
    hub.add_files("org/tiny", tiny_llama(1));
    let d = tempfile::tempdir().unwrap();
    let c = client(&hub, d.path(), None, 1 << 20);
    let e = pull(&c, "org/nope").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "org/nope: no such model at revision main on the Hub"
    );

    let e = c
        .pull(
            "org/tiny",
            "main",
            &|_| Some(100),
            &NullSink,
            &CancelToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::NoSpace { free: 100, .. }), "{e}");

    let cancel = CancelToken::new();
    cancel.cancel();
    let e = c
        .pull("org/tiny", "main", &plenty, &NullSink, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::Cancelled), "{e}");

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = HubClient::new(
        Some(format!("http://127.0.0.1:{closed}")),
        d.path(),
        None,
        1 << 20,
    )
    .unwrap();
    let e = pull(&c, "org/tiny").await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("cannot reach http://127.0.0.1:{closed}")),
        "{e}"
    );
}

/// Every path under `dir` (links not followed), for before/after comparisons.
fn tree(dir: &Path) -> std::collections::BTreeSet<PathBuf> {
    let mut out = std::collections::BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

#[test]
fn a_hostile_hub_cannot_write_outside_the_cache() {
    let hub = FakeHub::start();
    let base = tempfile::tempdir().unwrap();
    let cache = base.path().join("a/b/c/d/hub");
    std::fs::create_dir_all(&cache).unwrap();
    let outside = base.path().join("pwned");
    let hostile = [
        support::Hostile::ListingSha("../../../../../../pwned".into()),
        support::Hostile::ListingSha(outside.display().to_string()),
        support::Hostile::CommitHeader("../../../../../../pwned".into()),
        support::Hostile::CommitHeader(outside.display().to_string()),
        support::Hostile::Etag("../../../../../../pwned".into()),
        support::Hostile::Etag(outside.display().to_string()),
        support::Hostile::LongBody(1 << 20),
        support::Hostile::RedirectTo("file:///etc/passwd".into()),
    ];
    for (i, h) in hostile.iter().enumerate() {
        let id = format!("evil/m{i}");
        hub.add_repo(
            &id,
            FakeRepo {
                files: tiny_llama(1),
                hostile: Some(h.clone()),
                ..Default::default()
            },
        );
        let before = tree(base.path());
        let c = client(&hub, &cache, Some("hf_hostileSECRET"), 1 << 20);
        let e = pull_in_own_runtime(&c, &id).unwrap_err();
        // Neither the error nor anything written holds the token.
        assert!(!format!("{e} {e:?} {c:?}").contains("SECRET"), "{e:?}");
        assert!(
            matches!(e, HubError::Untrusted { .. }),
            "{h:?} was not refused as untrusted: {e}"
        );
        assert!(e.to_string().contains("cannot be trusted"), "{e}");
        let after = tree(base.path());
        let outside_cache: Vec<_> = after
            .symmetric_difference(&before)
            .filter(|p| !p.starts_with(&cache))
            .collect();
        assert!(
            outside_cache.is_empty(),
            "{h:?}: created, renamed or deleted outside hub/: {outside_cache:?}"
        );
        assert!(!outside.exists());
        // Nothing in the cache is a link that leads out of it.
        for p in tree(&cache) {
            if let Ok(real) = p.canonicalize() {
                assert!(real.starts_with(cache.canonicalize().unwrap()), "{p:?}");
            }
        }
    }
}

#[test]
fn endpoints_must_be_https_or_loopback_and_the_client_debug_hides_the_token() {
    let d = tempfile::tempdir().unwrap();
    let token = Sensitive::new("hf_debugSECRET".to_string());
    for ok in [
        "https://huggingface.co",
        "https://mirror.example.org/hf",
        "http://127.0.0.1:8080",
        "http://localhost:9",
        "http://[::1]:9",
    ] {
        let c = HubClient::new(Some(ok.into()), d.path(), Some(&token), 1024).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("SECRET"), "{dbg}");
        assert!(dbg.contains("has_token: true"), "{dbg}");
    }
    for bad in [
        "http://huggingface.co",
        "http://10.0.0.5:8080",
        "ftp://huggingface.co",
        "file:///tmp",
        "https://user:pw@huggingface.co",
        "not a url",
    ] {
        let e = HubClient::new(Some(bad.into()), d.path(), Some(&token), 1024).unwrap_err();
        assert!(matches!(e, HubError::Endpoint { .. }), "{bad}: {e}");
        assert!(e.to_string().starts_with("HF_ENDPOINT"), "{e}");
        assert!(!e.to_string().contains("SECRET"));
    }
    let e = HubClient::new(Some("http://example.com".into()), d.path(), None, 1024).unwrap_err();
    assert!(e.to_string().contains("use https://"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_repo_ids_and_revisions_are_refused_before_any_request() {
    let hub = FakeHub::start();
    hub.add_files("org/tiny", tiny_llama(1));
    let d = tempfile::tempdir().unwrap();
    let c = client(&hub, d.path(), None, 1 << 20);
    for (repo, rev) in [
        ("../x", "main"),
        ("org/..", "main"),
        ("/etc", "main"),
        ("org/tiny", "../../x"),
        ("org/tiny", "/abs"),
        ("org/tiny", "a\\b"),
    ] {
        let e = c
            .pull(repo, rev, &plenty, &NullSink, &CancelToken::new())
            .await
            .unwrap_err();
        assert!(matches!(e, HubError::NotAModel { .. }), "{repo}@{rev}: {e}");
    }
    assert!(hub.log().is_empty(), "{:?}", hub.log());
}

// ---- folder validation ----

fn folder(files: &[(String, Vec<u8>)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write_folder(d.path(), files);
    d
}

fn err_of(d: &Path) -> String {
    inspect_folder(d).unwrap_err().to_string()
}

#[test]
fn valid_folders_single_and_sharded() {
    for shards in [1, 3] {
        let d = folder(&tiny_llama(shards));
        let info = inspect_folder(d.path()).unwrap();
        assert_eq!(info.family, doctune_core::Family::Llama);
        assert_eq!(info.dtype, "F32");
        assert!(info.size_bytes > 4000);
        assert!(info.ignored.is_empty());
    }
}

#[test]
fn truncated_and_lying_headers_are_caught() {
    let files = tiny_llama(1);
    let (_, weights) = files
        .iter()
        .find(|(n, _)| n == "model.safetensors")
        .unwrap()
        .clone();
    let d = folder(&files);
    std::fs::write(
        d.path().join("model.safetensors"),
        &weights[..weights.len() - 10],
    )
    .unwrap();
    assert!(
        err_of(d.path()).contains("model.safetensors: truncated"),
        "{}",
        err_of(d.path())
    );
    // A header length past the end of the file.
    let mut lie = weights.clone();
    lie[..8].copy_from_slice(&(weights.len() as u64).to_le_bytes());
    std::fs::write(d.path().join("model.safetensors"), &lie).unwrap();
    assert!(
        err_of(d.path()).contains("truncated"),
        "{}",
        err_of(d.path())
    );
    // A header length past the limit.
    lie[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(d.path().join("model.safetensors"), &lie).unwrap();
    assert!(
        err_of(d.path()).contains("more than the"),
        "{}",
        err_of(d.path())
    );
    // Overlapping / non-contiguous offsets.
    let n = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(weights[8..8 + n].to_vec()).unwrap();
    let bad = header.replacen("\"data_offsets\":[0,", "\"data_offsets\":[4,", 1);
    assert_ne!(bad, header);
    let mut f = (bad.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(bad.as_bytes());
    f.extend_from_slice(&weights[8 + n..]);
    std::fs::write(d.path().join("model.safetensors"), &f).unwrap();
    assert!(
        err_of(d.path()).contains("invalid safetensors header"),
        "{}",
        err_of(d.path())
    );
    // Trailing garbage.
    let mut trail = weights.clone();
    trail.extend_from_slice(b"junk");
    std::fs::write(d.path().join("model.safetensors"), &trail).unwrap();
    assert!(
        err_of(d.path()).contains("4 unexpected bytes"),
        "{}",
        err_of(d.path())
    );
}

#[test]
fn config_problems_are_named() {
    let mut files = tiny_llama(1);
    let d = folder(&files);
    let set_config = |v: serde_json::Value| {
        std::fs::write(
            d.path().join("config.json"),
            serde_json::to_vec(&v).unwrap(),
        )
        .unwrap()
    };
    let base: serde_json::Value = serde_json::from_slice(&files[0].1).unwrap();

    let mut v = base.clone();
    v["architectures"] = serde_json::json!(["BertModel"]);
    set_config(v);
    let e = err_of(d.path());
    assert!(e.contains("config.json: architecture BertModel is not supported; DocTune supports LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM"), "{e}");

    let mut v = base.clone();
    v["auto_map"] = serde_json::json!({});
    set_config(v);
    assert!(err_of(d.path()).contains("remote code"));

    let mut v = base.clone();
    v["hidden_size"] = serde_json::json!(16);
    set_config(v);
    assert!(
        err_of(d.path())
            .contains("model.embed_tokens.weight has shape [32, 8] but config.json says [32, 16]"),
        "{}",
        err_of(d.path())
    );

    let mut v = base.clone();
    v["num_hidden_layers"] = serde_json::json!(3);
    set_config(v);
    assert!(
        err_of(d.path()).contains("num_hidden_layers is 3 but the weights hold 2 layers"),
        "{}",
        err_of(d.path())
    );

    std::fs::write(d.path().join("config.json"), b"{not json").unwrap();
    assert!(err_of(d.path()).contains("config.json: not valid JSON"));

    // Pickle only.
    files.retain(|(n, _)| !n.ends_with(".safetensors"));
    let p = folder(&files);
    std::fs::write(p.path().join("pytorch_model.bin"), b"\x80\x02").unwrap();
    let e = err_of(p.path());
    assert!(
        e.contains("has only PyTorch pickle weights (pytorch_model.bin)"),
        "{e}"
    );
}

#[test]
fn index_problems_are_named() {
    let files = tiny_llama(2);
    let d = folder(&files);
    let idx_path = d.path().join("model.safetensors.index.json");
    let mut idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&idx_path).unwrap()).unwrap();
    idx["weight_map"]["model.extra.weight"] = serde_json::json!("model-00001-of-00002.safetensors");
    std::fs::write(&idx_path, serde_json::to_vec(&idx).unwrap()).unwrap();
    assert!(
        err_of(d.path()).contains("does not contain model.extra.weight"),
        "{}",
        err_of(d.path())
    );
    idx["weight_map"]["model.extra.weight"] = serde_json::json!("../outside.safetensors");
    std::fs::write(&idx_path, serde_json::to_vec(&idx).unwrap()).unwrap();
    assert!(
        err_of(d.path()).contains("not a .safetensors file in this folder"),
        "{}",
        err_of(d.path())
    );
    std::fs::remove_file(d.path().join("model-00002-of-00002.safetensors")).unwrap();
    idx["weight_map"]
        .as_object_mut()
        .unwrap()
        .remove("model.extra.weight");
    std::fs::write(&idx_path, serde_json::to_vec(&idx).unwrap()).unwrap();
    assert!(
        err_of(d.path()).contains("missing (named by model.safetensors.index.json)"),
        "{}",
        err_of(d.path())
    );
}

#[cfg(unix)]
#[test]
fn a_weight_file_linking_out_of_the_folder_is_refused() {
    let outside = folder(&tiny_llama(1));
    let mut files = tiny_llama(1);
    files.retain(|(n, _)| n != "model.safetensors");
    let d = folder(&files);
    std::os::unix::fs::symlink(
        outside.path().join("model.safetensors"),
        d.path().join("model.safetensors"),
    )
    .unwrap();
    assert!(err_of(d.path()).contains("outside"), "{}", err_of(d.path()));
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
