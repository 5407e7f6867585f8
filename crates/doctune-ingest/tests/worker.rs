//! Extraction in a child process, as the CLI and the app run it: this test binary calls
//! `doctune_core::worker::serve_if_worker` first in `main` (so `harness = false`), which makes it its own extraction
//! worker. Each case is a real input: a page whose forms multiply past any deadline, JSON that
//! needs more memory than the cap; the worker is killed for each limit and the error names the
//! file and the limit. Linux only: the caps are `setrlimit`, and the checks read `/proc`.

#[cfg(target_os = "linux")]
fn main() {
    doctune_core::worker::serve_if_worker(&[(
        doctune_ingest::worker::JOB,
        doctune_ingest::worker::serve,
    )]);
    assert!(doctune_core::worker::enabled());
    type Case = (&'static str, fn(&std::path::Path));
    let cases: &[Case] = &[
        ("a_document_comes_back_from_the_worker", cases::round_trip),
        ("past_the_deadline_the_worker_is_killed", cases::deadline),
        ("past_the_cpu_limit_the_worker_is_stopped", cases::cpu_time),
        ("past_the_memory_cap_the_worker_is_stopped", cases::memory),
        ("a_worker_killed_by_a_signal_is_an_error", cases::crash),
        ("cancelling_kills_the_worker", cases::cancel),
    ];
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut ran = 0;
    for (name, case) in cases {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let start = std::time::Instant::now();
        case(dir.path());
        println!(
            "test {name} ... ok ({:.1} s)",
            start.elapsed().as_secs_f64()
        );
        ran += 1;
    }
    println!("\ntest result: ok. {ran} passed");
}

#[cfg(not(target_os = "linux"))]
fn main() {}

#[cfg(target_os = "linux")]
mod cases {
    use doctune_core::worker::WORKER_ARG;
    use doctune_core::{CancelToken, NullSink};
    use doctune_ingest::{extract, IngestError, Limits};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    /// The extraction workers this process has started that are still alive.
    fn live_workers() -> Vec<i32> {
        let me = std::process::id().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // "pid (comm) state ppid …": the fields after the last ')'.
                let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
                let ppid = after.split_whitespace().nth(1);
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                ppid == Some(me.as_str())
                    && cmdline
                        .split(|&b| b == 0)
                        .any(|a| a == WORKER_ARG.as_bytes())
            })
            .collect()
    }

    /// A page whose forms each draw the next twice, 30 deep: 2^30 forms for pdf-extract when the
    /// draw limit is lifted — work that outlasts any deadline in a few KiB and little memory.
    fn endless_pdf(dir: &Path) -> PathBuf {
        let p = dir.join("endless.pdf");
        std::fs::write(&p, doctune_testkit::hostile::form_chain_pdf(30, 2)).unwrap();
        p
    }

    fn unlimited_forms() -> Limits {
        Limits {
            max_form_draws: u64::MAX,
            ..Limits::default()
        }
    }

    fn run(path: &Path, limits: &Limits, cancel: &CancelToken) -> Result<String, IngestError> {
        extract(path, limits, &NullSink, cancel).map(|d| d.text)
    }

    pub fn round_trip(dir: &Path) {
        let p = dir.join("notes.md");
        std::fs::write(&p, "# Bees\n\nOpen the hive on a warm day.\n").unwrap();
        let doc = extract(&p, &Limits::default(), &NullSink, &CancelToken::new()).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let in_process = doctune_ingest::isolated(
            &p,
            doctune_ingest::Format::Markdown,
            bytes,
            &Limits::default(),
            &NullSink,
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!(doc, in_process);
        assert_eq!(doc.text, "Bees\n\nOpen the hive on a warm day.");
        // A refusal travels back as the same error.
        std::fs::write(&p, doctune_testkit::hostile::self_drawing_form_pdf()).unwrap();
        let e = extract(&p, &Limits::default(), &NullSink, &CancelToken::new()).unwrap_err();
        assert!(matches!(e, IngestError::LimitExceeded { .. }), "{e}");
        assert!(
            e.to_string().contains("notes.md: page 1: form XObject"),
            "{e}"
        );
        assert!(live_workers().is_empty());
    }

    pub fn deadline(dir: &Path) {
        let p = endless_pdf(dir);
        let limits = Limits {
            timeout: Duration::from_secs(1),
            ..unlimited_forms()
        };
        let start = Instant::now();
        let e = run(&p, &limits, &CancelToken::new()).unwrap_err();
        let took = start.elapsed();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: extraction took longer than 1 s and was stopped",
                p.display()
            )
        );
        assert!(took < Duration::from_secs(3), "{took:?}");
        // The worker is gone (killed and reaped) when the call returns, not a second later.
        assert!(live_workers().is_empty(), "{:?}", live_workers());
    }

    pub fn cpu_time(dir: &Path) {
        let p = endless_pdf(dir);
        let limits = Limits {
            cpu_time: Duration::from_secs(1),
            ..unlimited_forms()
        };
        let e = run(&p, &limits, &CancelToken::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: extraction used more than 1 s of CPU time and was stopped",
                p.display()
            )
        );
        assert!(live_workers().is_empty());
    }

    pub fn memory(dir: &Path) {
        // Ten million empty records: about 30 MB of JSON, hundreds of MB as values.
        let p = dir.join("records.json");
        std::fs::write(&p, doctune_testkit::hostile::many_records_json(10_000_000)).unwrap();
        let limits = Limits {
            max_records: usize::MAX,
            max_memory_bytes: 512 << 20,
            ..Limits::default()
        };
        let e = run(&p, &limits, &CancelToken::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: extraction needed more than 512 MiB of memory and was stopped",
                p.display()
            )
        );
        // The same file under the default record limit is refused before it costs anything.
        let e = run(&p, &Limits::default(), &CancelToken::new()).unwrap_err();
        assert!(e.to_string().ends_with("more than 1000000 records"), "{e}");
    }

    pub fn crash(dir: &Path) {
        let p = endless_pdf(dir);
        let limits = unlimited_forms();
        let worker = std::thread::spawn({
            let p = p.clone();
            move || run(&p, &limits, &CancelToken::new())
        });
        let pid = wait_for_worker();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::ABORT,
        )
        .unwrap();
        let e = worker.join().unwrap().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: extraction failed: the PDF parser was killed by signal 6",
                p.display()
            )
        );
        assert!(live_workers().is_empty());
    }

    pub fn cancel(dir: &Path) {
        let p = endless_pdf(dir);
        let cancel = CancelToken::new();
        let worker = std::thread::spawn({
            let (p, cancel) = (p.clone(), cancel.clone());
            move || run(&p, &unlimited_forms(), &cancel)
        });
        wait_for_worker();
        cancel.cancel();
        let e = worker.join().unwrap().unwrap_err();
        assert!(matches!(e, IngestError::Cancelled), "{e}");
        assert!(live_workers().is_empty());
    }

    fn wait_for_worker() -> i32 {
        let start = Instant::now();
        loop {
            if let Some(&pid) = live_workers().first() {
                // Let it get into the parser.
                std::thread::sleep(Duration::from_millis(300));
                return pid;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no worker started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
