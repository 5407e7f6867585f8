//! The hostile-input suite: every input of `doctune_testkit::hostile`, run through the real CLI
//! (`doctune ingest` for documents, `doctune model import` and `doctune generate --chat` for model
//! folders). Each must end in its one clear result — a refusal naming the file with exit status
//! 1, or the document read — never a signal, within a bounded time, and every process the suite
//! started (the CLI and its extraction workers) must have peaked under 1 GiB of memory. One test
//! in its own binary, so the peak read at the end is this suite's alone. Unix only: the peak is
//! read with getrusage.
#![cfg(unix)]

mod support;

use doctune_testkit::hostile::{self, Expect};
use std::time::{Duration, Instant};

/// The most any input may take, extraction worker start included.
const MAX_SECS: u64 = 30;
/// The most memory any process of the suite may have held.
const MAX_RSS: u64 = 1 << 30;

#[test]
fn hostile_inputs_end_in_one_clear_result() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    let run = |args: &[&str]| {
        let start = Instant::now();
        let o = support::doctune(&home, args);
        let took = start.elapsed();
        assert!(
            took < Duration::from_secs(MAX_SECS),
            "doctune {args:?} took {took:?}"
        );
        (o, took)
    };
    let (o, _) = run(&["project", "new", "hostile"]);
    assert!(o.status.success());
    let inputs = d.path().join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();

    let mut report = Vec::new();
    for f in hostile::documents() {
        let path = inputs.join(f.name);
        std::fs::write(&path, &f.bytes).unwrap();
        let (o, took) = run(&["ingest", "--project", "hostile", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        match f.expect {
            Expect::Refused(why) => {
                assert_eq!(o.status.code(), Some(1), "{}: {stderr}", f.name);
                let line = stderr
                    .lines()
                    .find(|l| l.contains(f.name))
                    .unwrap_or_else(|| panic!("{}: no error names the file: {stderr}", f.name));
                assert!(line.contains(why), "{}: {line}", f.name);
                report.push(format!("{} refused in {took:.1?}: {line}", f.name));
            }
            Expect::Read => {
                assert_eq!(o.status.code(), Some(0), "{}: {stderr}", f.name);
                report.push(format!("{} read in {took:.1?}", f.name));
            }
        }
    }
    // A million broken rows leave a project file of a few KiB: the first warnings and a count.
    let projects: Vec<_> = std::fs::read_dir(home.join("projects"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let [dir] = &projects[..] else {
        panic!("one project expected: {projects:?}")
    };
    let size = std::fs::metadata(dir.join("project.json")).unwrap().len();
    assert!(size < 256 << 10, "project.json is {size} bytes");

    for m in hostile::models() {
        let folder = inputs.join("models").join(m.name);
        doctune_testkit::hub::write_folder(&folder, &m.files);
        let (o, took) = run(&["model", "import", folder.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let (o, took, stderr) = if m.at_import {
            (o, took, stderr)
        } else {
            assert!(o.status.success(), "{}: {stderr}", m.name);
            let (o, took) = run(&[
                "generate",
                "--model",
                folder.to_str().unwrap(),
                "--prompt",
                "hello",
                "--chat",
                "--max-new-tokens",
                "1",
            ]);
            let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
            (o, took, stderr)
        };
        assert_eq!(o.status.code(), Some(1), "{}: {stderr}", m.name);
        let line = stderr.lines().last().unwrap_or_default();
        assert!(line.contains(m.error), "{}: {line}", m.name);
        report.push(format!("model {} refused in {took:.1?}: {line}", m.name));
    }

    let peak = peak_child_rss();
    report.push(format!("peak memory of any process: {} MiB", peak >> 20));
    println!("{}", report.join("\n"));
    assert!(peak < MAX_RSS, "a process peaked at {} MiB", peak >> 20);
}

/// The largest resident set any waited-for descendant of this process reached (getrusage
/// RUSAGE_CHILDREN: the CLI, and through it the extraction workers it waited for).
#[allow(unsafe_code)]
fn peak_child_rss() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_CHILDREN is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: initialised by the successful call above (and zeroed before).
    let kib = unsafe { usage.assume_init() }.ru_maxrss;
    u64::try_from(kib).unwrap_or(0) * 1024
}
