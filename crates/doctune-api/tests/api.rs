//! Use-case tests through `doctune-api`, without a window: projects and documents.

use doctune_api::{add_documents, projects, ApiError, Code, Home, Limits};
use doctune_core::{CancelToken, JobEvent, NullSink, VecSink};
use std::fs;
use std::path::{Path, PathBuf};

fn home() -> (tempfile::TempDir, Home) {
    let d = tempfile::tempdir().unwrap();
    let h = Home::at(d.path().join("home"));
    (d, h)
}

fn add(dir: &Path, paths: &[PathBuf]) -> doctune_api::AddReport {
    add_documents(
        dir,
        paths,
        &Limits::default(),
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap()
}

#[test]
fn create_list_and_open_projects() {
    let (_d, h) = home();
    assert!(projects::list(&h).unwrap().is_empty());
    let a = projects::create(&h, "My Thesis").unwrap();
    assert_eq!(a.id, "my-thesis");
    assert_eq!(a.document_count, 0);
    let b = projects::create(&h, " my thesis ").map(|_| ()).unwrap_err();
    assert_eq!(b.code, Code::AlreadyExists);
    let c = projects::create(&h, "My  thesis 2").unwrap();
    let listed = projects::list(&h).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|p| p.id == c.id));
    let dir = projects::dir_of(&h, "my-thesis").unwrap();
    for area in doctune_core::Area::ALL {
        let sub = area.dir_name();
        assert!(dir.join(sub).is_dir(), "{sub}");
    }
    let p = projects::open(&dir).unwrap();
    assert_eq!(p.summary.name, "My Thesis");
    // project.json is what we say it is.
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("project.json")).unwrap()).unwrap();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["name"], "My Thesis");
    // Ids cannot reach outside the projects folder.
    for bad in ["../x", "/etc", ".hidden", "", "missing"] {
        let e: ApiError = projects::dir_of(&h, bad).unwrap_err();
        assert!(
            matches!(
                e.code,
                Code::InvalidInput | Code::NotFound | Code::OutsideScope
            ),
            "{bad}: {e:?}"
        );
    }
    // locate: by folder, by id, by name.
    assert_eq!(projects::locate(&h, dir.to_str().unwrap()).unwrap(), dir);
    assert_eq!(projects::locate(&h, "my-thesis").unwrap(), dir);
    assert_eq!(projects::locate(&h, "My Thesis").unwrap(), dir);
    let e = projects::locate(&h, "nope").unwrap_err();
    assert!(e.message.contains("nope"));
}

/// Holds the shared lock a job in the project holds (as another process's job would).
fn job_in(dir: &Path) -> fs::File {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(doctune_core::ProjectDir::IN_USE))
        .unwrap();
    f.lock_shared().unwrap();
    f
}

#[test]
fn projects_are_renamed_and_deleted_but_not_while_a_job_works_in_them() {
    let (d, h) = home();
    let a = projects::create(&h, "Alpha").unwrap();
    projects::create(&h, "Beta").unwrap();
    // Rename keeps the folder (the id); names stay unique and validated.
    let r = projects::rename(&h, &a.id, "  Alpha, second edition ").unwrap();
    assert_eq!(
        (r.id.as_str(), r.name.as_str()),
        ("alpha", "Alpha, second edition")
    );
    assert_eq!(
        projects::open(Path::new(&r.path)).unwrap().summary.name,
        r.name
    );
    let e = projects::rename(&h, &a.id, "beta").unwrap_err();
    assert_eq!(e.code, Code::AlreadyExists);
    assert_eq!(
        projects::rename(&h, &a.id, " ").unwrap_err().code,
        Code::InvalidInput
    );
    projects::rename(&h, &a.id, "ALPHA, second edition").unwrap();
    assert_eq!(
        projects::rename(&h, "../x", "y").unwrap_err().code,
        Code::InvalidInput
    );

    // Documents are removed with their copy and their extracted text.
    let dir = PathBuf::from(&a.path);
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.md"), "# A\n\nfirst").unwrap();
    fs::write(src.join("b.md"), "# B\n\nsecond").unwrap();
    let report = add(&dir, &[src.join("a.md"), src.join("b.md")]);
    let limits = doctune_api::ingest::IngestLimits::default();
    doctune_api::ingest::ingest(&dir, None, &limits, &NullSink, &CancelToken::new()).unwrap();
    let gone = &report.added[0];
    let copy = dir.join("documents").join(&gone.file);
    let text = dir.join("extracted").join(format!("{}.json", gone.sha256));
    assert!(copy.is_file() && text.is_file());
    let job = job_in(&dir);
    let e = doctune_api::remove_document(&dir, &gone.sha256).unwrap_err();
    assert!(
        e.message.contains("a job is still working"),
        "{}",
        e.message
    );
    assert!(copy.is_file());
    drop(job);
    let removed = doctune_api::remove_document(&dir, &gone.sha256).unwrap();
    assert_eq!(removed.name, "a.md");
    assert!(!copy.exists() && !text.exists());
    let left = projects::open(&dir).unwrap();
    assert_eq!(left.documents.len(), 1);
    assert_eq!(left.documents[0].name, "b.md");
    let e = doctune_api::remove_document(&dir, &gone.sha256).unwrap_err();
    assert_eq!(e.code, Code::NotFound);
    assert!(e.message.contains(&gone.sha256));
    assert!(doctune_api::remove_document(&dir, "../../etc/passwd").is_err());

    // Show in folder resolves inside the project only.
    use projects::Folder;
    assert_eq!(
        projects::folder(&h, &a.id, &Folder::Project).unwrap(),
        dir.canonicalize().unwrap()
    );
    assert!(projects::folder(&h, &a.id, &Folder::Documents)
        .unwrap()
        .ends_with("documents"));
    assert_eq!(
        projects::folder(&h, &a.id, &Folder::Run("nope".into()))
            .unwrap_err()
            .code,
        Code::NotFound
    );
    assert!(projects::folder(&h, &a.id, &Folder::Export("../../x".into())).is_err());

    // Deleting waits for the project's jobs; permanent deletion removes the folder.
    let job = job_in(&dir);
    let e = projects::delete(&h, &a.id, projects::Deletion::Permanent).unwrap_err();
    assert!(e.message.contains("delete the project"), "{}", e.message);
    assert!(dir.is_dir());
    drop(job);
    let name = projects::delete(&h, &a.id, projects::Deletion::Permanent).unwrap();
    assert_eq!(name, "ALPHA, second edition");
    assert!(!dir.exists());
    assert_eq!(projects::list(&h).unwrap().len(), 1);
    assert_eq!(
        projects::delete(&h, &a.id, projects::Deletion::Permanent)
            .unwrap_err()
            .code,
        Code::NotFound
    );
}

#[test]
fn adding_copies_hashes_types_and_reports_duplicates() {
    let (d, h) = home();
    let p = projects::create(&h, "docs").unwrap();
    let dir = PathBuf::from(&p.path);
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("notes.md"), "# Notes\n\nhello").unwrap();
    fs::write(src.join("paper.pdf"), b"%PDF-1.7\n%fake").unwrap();
    fs::write(src.join("copy.md"), "# Notes\n\nhello").unwrap();
    fs::write(src.join("lies.docx"), b"%PDF-1.4 really a pdf").unwrap();

    let sink = VecSink::default();
    let r = add_documents(
        &dir,
        &[
            src.join("notes.md"),
            src.join("paper.pdf"),
            src.join("copy.md"),
            src.join("lies.docx"),
        ],
        &Limits::default(),
        &sink,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(r.added.len(), 3, "{r:?}");
    assert_eq!(r.duplicates.len(), 1);
    assert_eq!(r.duplicates[0].existing, "notes.md");
    assert!(r.duplicates[0].path.ends_with("copy.md"));
    let md = &r.added[0];
    assert_eq!(md.format.label(), "Markdown");
    assert_eq!(md.size_bytes, 14);
    // sha256sum of the same bytes
    assert_eq!(
        md.sha256,
        "8308cc372b77cd665969724964a425bea33928d861f3b23eb66b76b834442eac"
    );
    assert_eq!(r.added[1].format.label(), "PDF");
    assert_eq!(r.added[2].format.label(), "PDF");
    assert_eq!(
        r.added[2].warning.as_deref(),
        Some("the extension says .docx but the content is PDF")
    );
    // Copies are byte-identical; originals untouched.
    assert_eq!(
        fs::read(dir.join("documents/notes.md")).unwrap(),
        fs::read(src.join("notes.md")).unwrap()
    );
    assert!(src.join("notes.md").exists());
    // Progress: one event per file plus a final one.
    let progress = sink
        .events()
        .iter()
        .filter(|e| matches!(e, JobEvent::Progress { .. }))
        .count();
    assert_eq!(progress, 5);
    // Persisted.
    let opened = projects::open(&dir).unwrap();
    assert_eq!(opened.documents.len(), 3);
    assert_eq!(opened.summary.document_count, 3);
    // Adding the same again: all duplicates, nothing copied.
    let again = add(&dir, &[src.join("notes.md")]);
    assert!(again.added.is_empty());
    assert_eq!(again.duplicates.len(), 1);
    assert_eq!(
        fs::read_dir(dir.join("documents")).unwrap().count(),
        3,
        "no temp files left"
    );
}

#[test]
fn same_name_different_content_gets_a_new_name() {
    let (d, h) = home();
    let dir = PathBuf::from(projects::create(&h, "p").unwrap().path);
    for (i, sub) in ["a", "b"].iter().enumerate() {
        let s = d.path().join(sub);
        fs::create_dir_all(&s).unwrap();
        fs::write(s.join("report.txt"), format!("version {i}")).unwrap();
    }
    let r = add(
        &dir,
        &[d.path().join("a/report.txt"), d.path().join("b/report.txt")],
    );
    let files: Vec<_> = r.added.iter().map(|e| e.file.as_str()).collect();
    assert_eq!(files, ["report.txt", "report (2).txt"]);
    assert_eq!(r.added[1].name, "report.txt");
}

#[test]
fn bad_paths_get_specific_errors() {
    let (d, h) = home();
    let dir = PathBuf::from(projects::create(&h, "p").unwrap().path);
    let missing = d.path().join("missing.pdf");
    let r = add(&dir, std::slice::from_ref(&missing));
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].code, Code::NotFound);
    assert_eq!(
        r.failed[0].message,
        format!("{}: no such file or folder", missing.display())
    );

    #[cfg(unix)]
    {
        // A FIFO must be refused without blocking.
        let fifo = d.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let r = add(&dir, std::slice::from_ref(&fifo));
        assert_eq!(r.failed[0].code, Code::NotARegularFile);
        assert!(
            r.failed[0].message.contains("FIFO"),
            "{}",
            r.failed[0].message
        );
        assert!(r.failed[0].message.contains("pipe"));

        // A dangling link.
        let dangling = d.path().join("dangling.txt");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &dangling).unwrap();
        let r = add(&dir, &[dangling]);
        assert_eq!(r.failed[0].code, Code::NotFound);
    }
    assert!(projects::open(&dir).unwrap().documents.is_empty());
}

#[cfg(unix)]
#[test]
fn folders_are_walked_and_links_out_of_them_refused() {
    let (d, h) = home();
    let dir = PathBuf::from(projects::create(&h, "p").unwrap().path);
    let chosen = d.path().join("chosen");
    fs::create_dir_all(chosen.join("sub/deeper")).unwrap();
    fs::write(chosen.join("a.txt"), "a").unwrap();
    fs::write(chosen.join("sub/b.html"), "<html><p>b").unwrap();
    fs::write(chosen.join("sub/deeper/c.csv"), "x,y\n1,2\n").unwrap();
    fs::write(chosen.join(".hidden"), "h").unwrap();
    fs::write(d.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(d.path().join("secret.txt"), chosen.join("escape.txt")).unwrap();
    std::os::unix::fs::symlink(&chosen, chosen.join("sub/loop")).unwrap();
    std::os::unix::fs::symlink(chosen.join("a.txt"), chosen.join("inner-link.txt")).unwrap();

    let r = add(&dir, std::slice::from_ref(&chosen));
    let mut names: Vec<_> = r.added.iter().map(|e| e.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["a.txt", "b.html", "c.csv"], "{r:#?}");
    assert_eq!(r.skipped_hidden, 1);
    // The inner link is the same bytes as a.txt: a duplicate, not an error.
    assert_eq!(r.duplicates.len(), 1);
    assert_eq!(r.failed.len(), 1, "{r:#?}");
    assert_eq!(r.failed[0].code, Code::OutsideScope);
    assert!(r.failed[0].message.contains("escape.txt"));
    assert!(r.failed[0].message.contains("outside the folder you chose"));
    // Nothing of the secret was copied.
    for e in fs::read_dir(dir.join("documents")).unwrap() {
        assert_ne!(fs::read(e.unwrap().path()).unwrap(), b"secret");
    }
}

/// A file and a folder swapped for links out of the chosen folder again and again while the
/// folder is being added: whatever moment a swap lands on (between the walk's check and the
/// copy's open), nothing outside the folder is ever copied.
#[test]
fn files_swapped_for_links_while_a_folder_is_added_are_never_followed_out() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (d, h) = home();
    let chosen = d.path().join("chosen");
    fs::create_dir_all(chosen.join("sub")).unwrap();
    for i in 0..40 {
        fs::write(chosen.join(format!("f{i:02}.txt")), format!("document {i}")).unwrap();
    }
    fs::write(chosen.join("sub/inner.txt"), "inner").unwrap();
    let outside = d.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("inner.txt"), "SECRET outside").unwrap();
    fs::write(d.path().join("secret.txt"), "SECRET outside").unwrap();

    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, chosen, d) = (stop.clone(), chosen.clone(), d.path().to_path_buf());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for i in (0..40).step_by(3) {
                    let f = chosen.join(format!("f{i:02}.txt"));
                    let kept = chosen.join(format!(".f{i:02}.kept"));
                    if fs::rename(&f, &kept).is_ok() {
                        let _ = std::os::unix::fs::symlink(d.join("secret.txt"), &f);
                        std::thread::yield_now();
                        let _ = fs::remove_file(&f);
                        let _ = fs::rename(&kept, &f);
                    }
                }
                let sub = chosen.join("sub");
                let kept = chosen.join(".sub.kept");
                if fs::rename(&sub, &kept).is_ok() {
                    let _ = std::os::unix::fs::symlink(d.join("outside"), &sub);
                    std::thread::yield_now();
                    let _ = fs::remove_file(&sub);
                    let _ = fs::rename(&kept, &sub);
                }
                swaps += 1;
            }
            swaps
        })
    };
    let mut added = 0;
    for round in 0..25 {
        let dir = PathBuf::from(projects::create(&h, &format!("p{round}")).unwrap().path);
        let r = add(&dir, std::slice::from_ref(&chosen));
        added += r.added.len();
        for e in fs::read_dir(dir.join("documents")).unwrap() {
            let bytes = fs::read(e.unwrap().path()).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains("SECRET"),
                "round {round}: a file outside the chosen folder was copied: {r:#?}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 0 && added > 0, "swaps {swaps}, added {added}");
}

#[test]
fn limits_are_enforced() {
    let (d, h) = home();
    let dir = PathBuf::from(projects::create(&h, "p").unwrap().path);
    let big = d.path().join("big.txt");
    fs::write(&big, vec![b'a'; 2048]).unwrap();
    let limits = Limits {
        max_file_bytes: 1024,
        ..Limits::default()
    };
    let r = add_documents(&dir, &[big], &limits, &NullSink, &CancelToken::new()).unwrap();
    assert_eq!(r.failed[0].code, Code::InvalidInput);
    assert!(
        r.failed[0].message.contains("larger than the 1.0 KB limit"),
        "{}",
        r.failed[0].message
    );

    let many = d.path().join("many");
    fs::create_dir_all(&many).unwrap();
    for i in 0..5 {
        fs::write(many.join(format!("{i}.txt")), format!("{i}")).unwrap();
    }
    let limits = Limits {
        max_files: 3,
        ..Limits::default()
    };
    let e = add_documents(&dir, &[many], &limits, &NullSink, &CancelToken::new()).unwrap_err();
    assert_eq!(e.code, Code::InvalidInput);
    assert!(e.message.contains("more than 3 files"));
    assert_eq!(fs::read_dir(dir.join("documents")).unwrap().count(), 0);
}

#[test]
fn cancel_keeps_what_was_added_and_leaves_no_partial_file() {
    let (d, h) = home();
    let dir = PathBuf::from(projects::create(&h, "p").unwrap().path);
    let a = d.path().join("a.txt");
    let b = d.path().join("b.txt");
    fs::write(&a, "a").unwrap();
    fs::write(&b, "b").unwrap();
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    // Cancel as soon as the second file starts.
    let sink = move |e: JobEvent| {
        if let JobEvent::Progress { current: 1, .. } = e {
            c2.cancel();
        }
    };
    let r = add_documents(&dir, &[a, b], &Limits::default(), &sink, &cancel).unwrap();
    assert!(r.cancelled);
    assert_eq!(r.added.len(), 1);
    assert_eq!(fs::read_dir(dir.join("documents")).unwrap().count(), 1);
    assert_eq!(projects::open(&dir).unwrap().documents.len(), 1);
}

#[test]
fn doctor_reports_every_section() {
    let (_d, h) = home();
    let r = doctune_api::doctor(&h, &doctune_gpu::Gpus::init());
    let json = serde_json::to_value(&r).unwrap();
    for key in ["version", "system", "dataDir", "gpus", "keychain"] {
        assert!(json.get(key).is_some(), "{key}");
    }
    assert_eq!(r.gpus.is_empty(), r.gpu_message.is_some());
}

#[test]
fn ingest_is_cached_confined_and_reports_repeats() {
    use doctune_api::ingest::{self, ExtractStatus, IngestLimits};
    let (d, h) = home();
    let dir = PathBuf::from(projects::create(&h, "p").unwrap().path);
    let shared = "Bees fly up and over a hedge of two metres, which keeps their flight line high.";
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("a.md"),
        format!("# Bees\n\n{shared}\n\nOnly in a."),
    )
    .unwrap();
    fs::write(src.join("b.txt"), format!("{shared}\n\nOnly in b.")).unwrap();
    fs::write(src.join("c.txt"), format!("{shared}\n\nOnly in b.\n")).unwrap(); // same text as b
    fs::write(src.join("empty.txt"), "").unwrap();
    add(
        &dir,
        &[
            src.join("a.md"),
            src.join("b.txt"),
            src.join("c.txt"),
            src.join("empty.txt"),
        ],
    );

    let r = ingest::ingest(
        &dir,
        None,
        &IngestLimits::default(),
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(r.records.len(), 4);
    let status: Vec<_> = r
        .records
        .iter()
        .map(|x| (x.path.as_str(), x.status))
        .collect();
    assert!(
        status.contains(&("documents/a.md", ExtractStatus::Ok)),
        "{status:?}"
    );
    assert!(
        status.contains(&("documents/empty.txt", ExtractStatus::Error)),
        "{status:?}"
    );
    let bad = r
        .records
        .iter()
        .find(|x| x.status == ExtractStatus::Error)
        .unwrap();
    assert_eq!(
        bad.error.as_deref(),
        Some("documents/empty.txt: the file is empty")
    );
    assert_eq!(
        r.duplicate_texts,
        vec![vec!["b.txt".to_string(), "c.txt".to_string()]]
    );
    assert_eq!(r.repeated_paragraphs, 1);
    let opened = projects::open(&dir).unwrap();
    let a = opened.documents.iter().find(|x| x.name == "a.md").unwrap();
    assert_eq!(a.extraction.as_ref().unwrap().status, ExtractStatus::Ok);
    assert!(dir
        .join("extracted")
        .join(format!("{}.json", a.sha256))
        .is_file());
    let p = ingest::preview(&dir, &a.sha256, 4).unwrap();
    assert_eq!((p.text.as_str(), p.truncated), ("Bees", true));

    // Again: only the failed one is retried; a named one comes from the cache.
    let r = ingest::ingest(
        &dir,
        None,
        &IngestLimits::default(),
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(r.records.len(), 1);
    let only = [(a.sha256.clone(), "a.md".to_string())];
    let r = ingest::ingest(
        &dir,
        Some(&only),
        &IngestLimits::default(),
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    assert!(r.records[0].cached);

    // A document replaced by a link out of the project is refused, not read.
    #[cfg(unix)]
    {
        let b = opened.documents.iter().find(|x| x.name == "b.txt").unwrap();
        fs::write(d.path().join("outside.txt"), "outside").unwrap();
        fs::remove_file(dir.join("documents/b.txt")).unwrap();
        std::os::unix::fs::symlink(d.path().join("outside.txt"), dir.join("documents/b.txt"))
            .unwrap();
        fs::remove_file(dir.join("extracted").join(format!("{}.json", b.sha256))).unwrap();
        let only = [(b.sha256.clone(), "b.txt".to_string())];
        let r = ingest::ingest(
            &dir,
            Some(&only),
            &IngestLimits::default(),
            &NullSink,
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!(r.records[0].status, ExtractStatus::Error);
        assert!(
            r.records[0].error.as_deref().unwrap().contains("outside"),
            "{:?}",
            r.records[0].error
        );
    }
}

fn tiny_model(name: &str) -> PathBuf {
    PathBuf::from(crate_dir())
        .join("../doctune-models/tests/fixtures")
        .join(name)
}

fn gen_request(model: &Path) -> doctune_api::GenerateRequest {
    doctune_api::GenerateRequest {
        model: model.display().to_string(),
        adapter: None,
        prompt: "The quick brown fox reads a document about models".into(),
        chat: false,
        system: None,
        max_new_tokens: 32,
        sampling: Default::default(),
        device: None,
    }
}

#[test]
fn generate_streams_text_and_matches_the_model_layer() {
    let (_d, h) = home();
    let cache = doctune_api::ModelCache::default();
    let sink = VecSink::default();
    let req = gen_request(&tiny_model("qwen3"));
    let out =
        doctune_api::generate::generate(&h, &cache, &req, &sink, &CancelToken::new()).unwrap();
    assert_eq!(out.token_ids.len(), 32);
    let streamed: String = sink
        .events()
        .into_iter()
        .filter_map(|e| match e {
            JobEvent::Text { text } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(streamed, out.text);
    assert!(matches!(
        sink.events().last(),
        Some(JobEvent::Generated { tokens: 32, .. })
    ));

    // Same ids as the model layer's greedy generation of the same prompt.
    let m = doctune_models::load(&tiny_model("qwen3"), &Default::default()).unwrap();
    let ids = m.tokenizer.encode(&req.prompt, true).unwrap();
    let direct = doctune_models::generate(
        &m.model,
        &m.tokenizer,
        &ids,
        &doctune_models::GenerateOptions {
            max_new_tokens: 32,
            sampling: Default::default(),
            stop_ids: m.tokenizer.stop_ids().to_vec(),
            stop_strings: vec![],
        },
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out.token_ids, direct.token_ids);

    // With the adapter the output changes; sampling with a seed is reproducible.
    let mut with_adapter = req.clone();
    with_adapter.adapter = Some(tiny_model("qwen3").join("adapter").display().to_string());
    let adapted =
        doctune_api::generate::generate(&h, &cache, &with_adapter, &NullSink, &CancelToken::new())
            .unwrap();
    assert_ne!(adapted.token_ids, out.token_ids);
    let mut sampled = req.clone();
    sampled.sampling = doctune_models::Sampling {
        temperature: Some(0.8),
        top_k: Some(50),
        top_p: Some(0.95),
        repetition_penalty: 1.1,
        seed: 7,
    };
    let a = doctune_api::generate::generate(&h, &cache, &sampled, &NullSink, &CancelToken::new())
        .unwrap();
    let b = doctune_api::generate::generate(&h, &cache, &sampled, &NullSink, &CancelToken::new())
        .unwrap();
    assert_eq!(a.token_ids, b.token_ids);
    assert_ne!(a.token_ids, out.token_ids);
}

#[test]
fn chat_generation_uses_the_template() {
    let (_d, h) = home();
    let cache = doctune_api::ModelCache::default();
    let mut req = gen_request(&tiny_model("llama"));
    req.chat = true;
    req.system = Some("Be brief.".into());
    let m = doctune_models::load(&tiny_model("llama"), &Default::default()).unwrap();
    let ids =
        doctune_api::generate::encode_prompt(&m, &req.prompt, true, req.system.as_deref()).unwrap();
    let rendered = m.tokenizer.decode(&ids, false).unwrap();
    assert!(
        rendered.starts_with("<|im_start|>system\nBe brief.<|im_end|>"),
        "{rendered}"
    );
    assert!(rendered.ends_with("<|im_start|>assistant\n"), "{rendered}");
    let out =
        doctune_api::generate::generate(&h, &cache, &req, &NullSink, &CancelToken::new()).unwrap();
    assert!(!out.text.contains("<|im_end|>"));
}

#[test]
fn generate_errors_name_the_problem() {
    let (d, h) = home();
    let cache = doctune_api::ModelCache::default();
    let run = |req: &doctune_api::GenerateRequest| {
        doctune_api::generate::generate(&h, &cache, req, &NullSink, &CancelToken::new())
            .unwrap_err()
    };
    let mut req = gen_request(&d.path().join("nope"));
    let e = run(&req);
    assert_eq!(e.code, Code::NotFound);
    assert!(e.message.contains("nope"), "{e}");

    // Pickle-only weights are refused, naming the files.
    let pickle = d.path().join("pickle");
    fs::create_dir_all(&pickle).unwrap();
    fs::copy(
        tiny_model("llama").join("config.json"),
        pickle.join("config.json"),
    )
    .unwrap();
    fs::write(pickle.join("pytorch_model.bin"), b"not really").unwrap();
    req.model = pickle.display().to_string();
    let e = run(&req);
    assert!(
        e.message.contains("pytorch_model.bin") && e.message.contains("safetensors"),
        "{e}"
    );

    // An adapter for another model names the module it cannot place.
    req.model = tiny_model("phi3").display().to_string();
    req.adapter = Some(tiny_model("llama").join("adapter").display().to_string());
    let e = run(&req);
    assert!(
        e.message.contains("this model does not have")
            && e.message.contains("adapter_model.safetensors"),
        "{e}"
    );

    req.adapter = None;
    req.max_new_tokens = 0;
    assert_eq!(run(&req).code, Code::InvalidInput);
}

#[test]
fn cancelled_generation_reports_cancelled() {
    let (_d, h) = home();
    let cancel = CancelToken::new();
    cancel.cancel();
    let req = gen_request(&tiny_model("mistral"));
    let e = doctune_api::generate::generate(&h, &Default::default(), &req, &NullSink, &cancel)
        .unwrap_err();
    assert_eq!(e.code, Code::Cancelled);
}

#[test]
fn datasets_are_built_listed_and_previewed() {
    use doctune_api::dataset::{self, BuildOptions, Mode};
    let (d, h) = home();
    let dir = PathBuf::from(projects::create(&h, "ds").unwrap().path);
    let model = tiny_model("llama");
    let mut req = doctune_api::DatasetRequest {
        model: model.display().to_string(),
        inputs: vec![],
        options: BuildOptions {
            mode: Mode::Pretrain,
            seq_len: 32,
            val_fraction: 0.0,
            ..Default::default()
        },
    };
    // Nothing extracted yet: a clear error.
    let e = dataset::build(&h, &dir, &req, &NullSink, &CancelToken::new()).unwrap_err();
    assert!(e.message.contains("no extracted document"), "{e}");

    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("a.txt"),
        "DocTune reads documents. It builds a dataset.\n\nThen it trains.".repeat(5),
    )
    .unwrap();
    fs::write(
        src.join("chat.jsonl"),
        "{\"instruction\":\"What is DocTune?\",\"output\":\"A local fine-tuning app.\"}\n{\"instruction\":\"bad\"}\n",
    )
    .unwrap();
    add(&dir, &[src.join("a.txt"), src.join("chat.jsonl")]);
    doctune_api::ingest::ingest(
        &dir,
        None,
        &Default::default(),
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();

    let sink = VecSink::default();
    let p = dataset::build(&h, &dir, &req, &sink, &CancelToken::new()).unwrap();
    assert!(p.id.starts_with("pretrain-"));
    assert!(p.meta.stats.train_examples > 3);
    // The JSONL document is instruction data, not prose: only a.txt was packed.
    assert_eq!(p.meta.sources.len(), 1);
    assert!(sink
        .events()
        .iter()
        .any(|e| matches!(e, JobEvent::Progress { unit, .. } if unit == "documents")));

    // Instruction mode from the project's own JSONL document, named by sha256 as the app does.
    let project = projects::open(&dir).unwrap();
    let sha = project
        .documents
        .iter()
        .find(|x| x.name == "chat.jsonl")
        .unwrap()
        .sha256
        .clone();
    req.options.mode = Mode::Instruct;
    req.options.seq_len = 256;
    let e = dataset::build(&h, &dir, &req, &NullSink, &CancelToken::new()).unwrap_err();
    assert!(
        e.message.contains("needs at least one instruction file"),
        "{e}"
    );
    req.inputs = dataset::document_paths(&dir, &[sha]).unwrap();
    let i = dataset::build(&h, &dir, &req, &NullSink, &CancelToken::new()).unwrap();
    assert_eq!(i.meta.stats.train_examples, 1);
    assert_eq!(i.meta.bad_rows[0].line, 2);
    assert!(i.meta.bad_rows[0].reason.contains("missing field `output`"));

    let listed = dataset::list(&dir).unwrap();
    assert_eq!(listed.len(), 2);
    let pdir = dataset::dir_of(&dir, &i.id).unwrap();
    let ex = &dataset::preview(&pdir, 3).unwrap()[0];
    let chars: Vec<char> = ex.text.chars().collect();
    let trained: String = ex
        .spans
        .iter()
        .flat_map(|&(a, b)| chars[a..b].iter())
        .collect();
    assert_eq!(trained, "A local fine-tuning app.<|im_end|>\n");
    assert!(ex.trained_tokens > 0 && ex.trained_tokens < ex.tokens);
    assert_eq!(
        dataset::dir_of(&dir, "../x").unwrap_err().code,
        Code::InvalidInput
    );
    assert_eq!(
        dataset::dir_of(&dir, "nope").unwrap_err().code,
        Code::NotFound
    );
    assert!(dataset::document_paths(&dir, &["0".repeat(64)]).is_err());
}

/// A project with one extracted Markdown guide (headings, definitions).
fn qa_project(d: &Path, h: &Home) -> PathBuf {
    let dir = PathBuf::from(projects::create(h, "qa").unwrap().path);
    let src = d.join("qa-src");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("guide.md"),
        "# Checkpoints\n\nA checkpoint is a snapshot of the adapter and the optimizer state. \
         DocTune writes every checkpoint atomically and resumes from the newest one.\n\n\
         # Secrets\n\nThe keychain is the operating system's store for passwords and tokens. \
         Access tokens never appear in files, logs or error messages.\n\n\
         # Exports\n\nA Modelfile is the recipe Ollama reads to create a model from GGUF \
         weights.\n",
    )
    .unwrap();
    add(&dir, &[src.join("guide.md")]);
    doctune_api::ingest::ingest(
        &dir,
        None,
        &Default::default(),
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    dir
}

#[test]
fn qa_datasets_are_made_from_the_documents_with_their_sources() {
    use doctune_api::dataset::{self, BuildOptions, Generator, Mode, PairFormat, QaOptions};
    let (d, h) = home();
    let dir = qa_project(d.path(), &h);
    let model = tiny_model("llama");
    let req = doctune_api::DatasetRequest {
        model: model.display().to_string(),
        inputs: vec![],
        options: BuildOptions {
            mode: Mode::Qa,
            seq_len: 256,
            val_fraction: 0.0,
            qa: QaOptions {
                passage_tokens: 96,
                overlap_tokens: 8,
                ..QaOptions::default()
            },
            ..Default::default()
        },
    };
    let sink = VecSink::default();
    let ds = dataset::build(&h, &dir, &req, &sink, &CancelToken::new()).unwrap();
    assert!(ds.id.starts_with("qa-"), "{}", ds.id);
    let qa = ds.meta.qa.as_ref().unwrap();
    assert_eq!(qa.generator, "template");
    assert_eq!(qa.documents[0].document, "guide.md");
    assert!(qa.documents[0].passages >= 3, "{qa:?}");
    assert!(qa.by_origin["definition"] >= 3, "{qa:?}");
    assert!(sink.events().iter().any(|e| matches!(
        e,
        JobEvent::Progress { unit, eta_secs: Some(_), .. } if unit == "passages"
    )));
    let examples = dataset::preview(&dataset::dir_of(&dir, &ds.id).unwrap(), 50).unwrap();
    let modelfile = examples
        .iter()
        .find(|e| e.text.contains("What is a Modelfile?"))
        .expect("a definition question from the Exports section");
    let src = modelfile.source.as_ref().unwrap();
    assert_eq!(src.document, "guide.md");
    assert_eq!(src.section.as_deref(), Some("Exports"));
    assert!(src
        .passage
        .contains("A Modelfile is the recipe Ollama reads"));
    // The span is the passage's place in the extracted text.
    let text =
        doctune_api::ingest::cached(&dir, &projects::open(&dir).unwrap().documents[0].sha256)
            .unwrap()
            .unwrap()
            .text;
    let span: String = text
        .chars()
        .skip(src.start)
        .take(src.end - src.start)
        .collect();
    assert_eq!(span, src.passage);
    let out = d.path().join("pairs.jsonl");
    let n = dataset::export_pairs(
        &dataset::dir_of(&dir, &ds.id).unwrap(),
        PairFormat::Messages,
        &out,
    )
    .unwrap();
    assert_eq!(n, ds.meta.stats.train_examples);

    // A generator model (the tiny random one: mechanics, not content). Its replies cannot be
    // read, so each passage is retried once and counted; the build says why nothing is left,
    // and every passage's work is in the cache, so the second build generates nothing.
    let mut gen = req.clone();
    gen.options.qa.generator = Generator::Model {
        model: model.display().to_string(),
    };
    gen.options.qa.max_new_tokens = 16;
    let sink = VecSink::default();
    let e = dataset::build(&h, &dir, &gen, &sink, &CancelToken::new()).unwrap_err();
    assert!(
        e.message.contains("made no usable question-answer pair"),
        "{e}"
    );
    let passages = qa.documents[0].passages;
    assert!(
        e.message
            .contains(&format!("from {passages} passages (0 from the cache)")),
        "{e}"
    );
    let cache = dir.join("datasets/.qa-cache");
    assert_eq!(fs::read_dir(&cache).unwrap().count(), passages);
    let entry: serde_json::Value = serde_json::from_slice(
        &fs::read(
            fs::read_dir(&cache)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(entry["attempts"], 2);
    assert_eq!(entry["malformed"], true);
    let etas = sink
        .events()
        .iter()
        .filter(|e| matches!(e, JobEvent::Progress { unit, eta_secs: Some(_), .. } if unit == "passages"))
        .count();
    assert_eq!(etas, passages);
    let e = dataset::build(&h, &dir, &gen, &NullSink, &CancelToken::new()).unwrap_err();
    assert!(
        e.message.contains(&format!("({passages} from the cache)")),
        "{e}"
    );
    // A cancelled build stops with `cancelled`.
    let cancel = CancelToken::new();
    cancel.cancel();
    gen.options.qa.max_new_tokens = 17;
    let e = dataset::build(&h, &dir, &gen, &NullSink, &cancel).unwrap_err();
    assert_eq!(e.code, Code::Cancelled, "{e}");
}

/// An instruction dataset (sequences of 64, a fifth for validation) of `src` for `model`.
fn instruct_dataset(
    h: &Home,
    dir: &Path,
    model: &Path,
    src: PathBuf,
) -> doctune_api::DatasetSummary {
    use doctune_api::dataset::{self, BuildOptions, Mode};
    dataset::build(
        h,
        dir,
        &doctune_api::DatasetRequest {
            model: model.display().to_string(),
            inputs: vec![src],
            options: BuildOptions {
                mode: Mode::Instruct,
                seq_len: 64,
                val_fraction: 0.2,
                ..Default::default()
            },
        },
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap()
}

#[test]
fn bundles_carry_the_job_and_imported_adapters_become_runs() {
    use doctune_api::train;
    use sha2::{Digest, Sha256};
    let (d, h) = home();
    let dir = PathBuf::from(projects::create(&h, "bundle").unwrap().path);
    let src = d.path().join("qa.jsonl");
    let rows: String = (0..10)
        .map(|i| {
            format!(
                "{{\"instruction\":\"Q{i}{}\",\"output\":\"A{i}\"}}\n",
                " more".repeat(i % 3)
            )
        })
        .collect();
    fs::write(&src, rows).unwrap();
    let model = tiny_model("llama");
    let ds = instruct_dataset(&h, &dir, &model, src);
    let overrides = train::RunOverrides {
        max_steps: Some(3),
        micro_batch: Some(2),
        grad_accum: Some(2),
        lora_dropout: Some(0.0),
        ..Default::default()
    };
    let ds_dir = train::resolve_dataset(&dir, &ds.id).unwrap();
    let mut config = train::settings(&ds_dir, None, &overrides).unwrap();
    config.base_model = model.clone();
    let out = d.path().join("job");
    let b = doctune_api::bundle::bundle(
        &h,
        &dir,
        config.clone(),
        &out,
        true,
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(b.steps, 3);
    // Every file is in the manifest with its sha256.
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let files = manifest["files"].as_array().unwrap();
    for name in [
        "train.py",
        "axolotl.yaml",
        "bundle.json",
        "README.md",
        "DATA.md",
        "data/train.jsonl",
        "data/val.jsonl",
        "data/train.text.jsonl",
        "data/order.json",
        "data/meta.json",
        "initial_adapter/adapter_model.safetensors",
    ] {
        let f = files
            .iter()
            .find(|f| f["path"] == name)
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(
            f["sha256"],
            hex::encode(Sha256::digest(fs::read(out.join(name)).unwrap())),
            "{name}"
        );
    }
    // The examples as the dataset has them, the mask as -100; the order the trainer's.
    let records: Vec<doctune_dataset::Record> =
        doctune_dataset::read_split(&ds_dir, doctune_dataset::Split::Train)
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let rows: Vec<serde_json::Value> = fs::read_to_string(out.join("data/train.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), records.len());
    for (row, r) in rows.iter().zip(&records) {
        let ids: Vec<u32> = serde_json::from_value(row["input_ids"].clone()).unwrap();
        let labels: Vec<i64> = serde_json::from_value(row["labels"].clone()).unwrap();
        assert_eq!(ids, r.ids);
        for ((&l, &id), &m) in labels.iter().zip(&r.ids).zip(&r.mask) {
            assert_eq!(l, if m == 1 { i64::from(id) } else { -100 });
        }
    }
    let order: Vec<usize> =
        serde_json::from_slice(&fs::read(out.join("data/order.json")).unwrap()).unwrap();
    let n = records.len();
    let expected: Vec<usize> = (0..2)
        .flat_map(|e| doctune_train::epoch_order(n, config.seed, e))
        .take(3 * 2 * 2)
        .collect();
    assert_eq!(order, expected);
    let settings: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("bundle.json")).unwrap()).unwrap();
    assert_eq!(
        settings["lora"]["targetModules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    assert_eq!(settings["microBatch"], 2);
    assert_eq!(settings["gradAccum"], 2);
    let yaml = fs::read_to_string(out.join("axolotl.yaml")).unwrap();
    for line in [
        "adapter: lora",
        "lora_r: 8",
        "micro_batch_size: 2",
        "gradient_accumulation_steps: 2",
        "max_steps: 3",
        "sequence_len: 64",
    ] {
        assert!(yaml.lines().any(|l| l == line), "{line} in\n{yaml}");
    }
    let readme = fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("torchrun --nproc_per_node=N train.py"));
    assert!(readme.contains("--rdzv_endpoint=HOST:29500"));
    assert!(readme.contains("doctune runs import"));
    // An existing folder is never replaced.
    assert!(doctune_api::bundle::bundle(
        &h,
        &dir,
        config.clone(),
        &out,
        false,
        &NullSink,
        &CancelToken::new()
    )
    .is_err());

    // A trainer's output comes back as a run: here an adapter DocTune trained, laid out as the
    // bundle's train.py writes it (adapter/, bundle.json, metrics.jsonl).
    config.dataset = ds_dir.clone();
    let s = train::start(
        &h,
        &dir,
        config.clone(),
        &NullSink,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    let result = d.path().join("output");
    fs::create_dir_all(result.join("adapter")).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        fs::copy(
            s.run_dir.join("adapter").join(f),
            result.join("adapter").join(f),
        )
        .unwrap();
    }
    fs::copy(out.join("bundle.json"), result.join("bundle.json")).unwrap();
    fs::copy(
        s.run_dir.join("metrics.jsonl"),
        result.join("metrics.jsonl"),
    )
    .unwrap();
    let run = doctune_api::bundle::import_run(&h, &dir, &result, None).unwrap();
    assert!(run.imported_from.is_some());
    let listed = train::list(&dir).unwrap();
    let info = listed.iter().find(|r| r.id == run.id).unwrap();
    assert_eq!(info.steps, 3);
    assert!(info.adapter.is_some());
    // Export works on it, and resuming it is refused with the reason.
    let peft = doctune_api::export::export(
        &h,
        &dir.join("runs").join(&run.id),
        &doctune_export::ExportOptions {
            format: doctune_export::Format::Peft,
            quant: Default::default(),
            dtype: Default::default(),
            checkpoint: None,
            system: None,
            overwrite: false,
        },
        Some(d.path().join("peft")),
        &NullSink,
        &CancelToken::new(),
    );
    assert!(peft.is_ok(), "{peft:?}");
    let e = train::resume(
        &dir.join("runs").join(&run.id),
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap_err();
    assert!(e.message.contains("trained elsewhere"), "{e}");

    // What is refused: a pickle, an adapter of another model, a full model, nothing.
    let pickle = d.path().join("pickle");
    fs::create_dir_all(&pickle).unwrap();
    fs::copy(
        result.join("adapter/adapter_config.json"),
        pickle.join("adapter_config.json"),
    )
    .unwrap();
    fs::write(pickle.join("adapter_model.bin"), b"\x80\x02}q\x00.").unwrap();
    let e = doctune_api::bundle::import_run(&h, &dir, &pickle, Some(&model.display().to_string()))
        .unwrap_err();
    assert!(e.message.contains("pickle (adapter_model.bin)"), "{e}");
    let other = tiny_model("qwen3").join("adapter");
    let e = doctune_api::bundle::import_run(&h, &dir, &other, Some(&model.display().to_string()))
        .unwrap_err();
    assert!(e.message.contains("do not fit"), "{e}");
    let full = d.path().join("full");
    fs::create_dir_all(full.join("model")).unwrap();
    let e = doctune_api::bundle::import_run(&h, &dir, &full, Some(&model.display().to_string()))
        .unwrap_err();
    assert!(e.message.contains("doctune model import"), "{e}");
    let e = doctune_api::bundle::import_run(&h, &dir, d.path(), None).unwrap_err();
    assert!(e.message.contains("name the base model"), "{e}");
    // Nothing half-made was left among the runs.
    let runs: Vec<String> = fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
}

#[test]
fn runs_are_started_listed_and_redrawn() {
    use doctune_api::train;
    let (d, h) = home();
    let dir = PathBuf::from(projects::create(&h, "tr").unwrap().path);
    let src = d.path().join("qa.jsonl");
    let rows: String = (0..12)
        .map(|i| format!("{{\"instruction\":\"Q{i}\",\"output\":\"A{i}\"}}\n"))
        .collect();
    fs::write(&src, rows).unwrap();
    let ds = instruct_dataset(&h, &dir, &tiny_model("qwen3"), src);
    let preset = train::preset(&dir, &ds.id, train::Preset::Balanced).unwrap();
    assert!(matches!(
        preset.method,
        train::Method::Lora { rank: 16, .. }
    ));
    let mut config = preset;
    config.base_model = tiny_model("qwen3");
    config.dataset = PathBuf::from(&ds.id);
    config.max_steps = Some(3);
    let sink = VecSink::default();
    let mut started = None;
    let s = train::start(&h, &dir, config, &sink, &CancelToken::new(), &mut |p| {
        started = Some(p.to_path_buf())
    })
    .unwrap();
    assert_eq!(s.steps, 3);
    assert_eq!(started.as_deref(), Some(s.run_dir.as_path()));
    assert!(sink
        .events()
        .iter()
        .any(|e| matches!(e, JobEvent::Metrics { step: 3, .. })));
    let runs = train::list(&dir).unwrap();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].adapter.is_some());
    let id = runs[0].id.clone();
    assert_eq!(
        train::history(&train::run_dir(&dir, &id).unwrap())
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        train::run_dir(&dir, "../x").unwrap_err().code,
        Code::InvalidInput
    );

    // Exports go to the project's exports/<id>/ and are listed with their run.
    use doctune_api::export::{self, ExportOptions, Format, Quant};
    let opts = ExportOptions {
        format: Format::Ollama,
        quant: Quant::Q8_0,
        dtype: Default::default(),
        checkpoint: None,
        system: None,
        overwrite: false,
    };
    let run_dir = train::run_dir(&dir, &id).unwrap();
    let est = export::estimate(&run_dir, &opts).unwrap();
    let r = export::export(&h, &run_dir, &opts, None, &NullSink, &CancelToken::new()).unwrap();
    // The estimate shown before the export is its weights and tokenizer: within a tenth of what
    // was written (the rest is the card, Modelfile and manifest).
    let written = r.total_bytes as f64;
    assert!(
        (est.bytes as f64 - written).abs() / written < 0.1,
        "estimated {} bytes, wrote {written}",
        est.bytes
    );
    assert!(est.free_bytes.is_some_and(|f| f > 0));
    assert!(
        r.dir.starts_with(dir.join("exports")),
        "{}",
        r.dir.display()
    );
    assert!(r.files.iter().any(|f| f.path == "Modelfile"));
    let listed = export::list(&dir).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].format, Format::Ollama);
    assert_eq!(listed[0].run_id, id);
    assert_eq!(
        train::list(&dir).unwrap()[0].exports,
        vec![listed[0].id.clone()]
    );
    // A run outside a project needs a destination.
    let loose = d.path().join("loose-run");
    fs::rename(&run_dir, &loose).unwrap();
    let e = export::export(&h, &loose, &opts, None, &NullSink, &CancelToken::new()).unwrap_err();
    assert_eq!(e.code, Code::InvalidInput);
    assert!(e.message.contains("--out"), "{}", e.message);

    // A run is deleted only while no job works in the project; its exports stay.
    fs::rename(&loose, &run_dir).unwrap();
    let job = job_in(&dir);
    let e = train::delete_run(&dir, &id, projects::Deletion::Permanent).unwrap_err();
    assert!(e.message.contains("delete the run"), "{}", e.message);
    drop(job);
    train::delete_run(&dir, &id, projects::Deletion::Permanent).unwrap();
    assert!(!run_dir.exists());
    assert_eq!(export::list(&dir).unwrap().len(), 1);
    assert_eq!(
        train::delete_run(&dir, &id, projects::Deletion::Permanent)
            .unwrap_err()
            .code,
        Code::NotFound
    );
}

/// This crate's folder, read when the test runs (cargo sets it then too): a test binary that
/// cargo reuses from a build in another checkout sharing the target folder must read this
/// checkout's fixtures, not that one's.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
