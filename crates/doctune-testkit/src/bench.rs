//! The benchmarks' process helpers: peak memory, running a worker and reading its JSON answer
//! (optionally sampling its memory from outside), and their options from the environment.

/// This process's peak resident memory (`VmHWM`), where the OS tells; 0 elsewhere. For the
/// benchmarks, which run each side in its own process.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs a benchmark worker and parses the JSON object on the last line of its output; `None`
/// (with the worker's last error line on stderr) if it fails.
pub fn run_json(cmd: &mut std::process::Command) -> Option<serde_json::Value> {
    let out = cmd.output().ok()?;
    if !out.status.success() {
        eprintln!(
            "  failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last()?).ok()
}

/// A worker's memory, sampled from outside every few milliseconds while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeakMemory {
    /// Peak resident memory (`VmHWM`), file-backed pages included: a model file read through
    /// mmap counts here although the kernel can drop those pages at any time.
    pub rss_bytes: u64,
    /// Peak anonymous memory (`RssAnon`): what the process allocated itself, the figure that
    /// shows whether it holds one tensor at a time or the whole model.
    pub anon_bytes: u64,
}

/// Like [`run_json`], sampling the worker's `/proc/PID/status` every 5 ms (Linux; zeros
/// elsewhere).
pub fn run_json_sampled(
    cmd: &mut std::process::Command,
) -> Option<(serde_json::Value, PeakMemory)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let status = format!("/proc/{}/status", child.id());
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = PeakMemory::default();
            let field = |s: &str, name: &str| {
                s.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .map(|kb| kb * 1024)
            };
            while !done.load(Ordering::Relaxed) {
                // A zombie's status has no memory lines: the last reading stands.
                if let Ok(s) = std::fs::read_to_string(&status) {
                    if let Some(hwm) = field(&s, "VmHWM:") {
                        peak.rss_bytes = peak.rss_bytes.max(hwm);
                    }
                    if let Some(anon) = field(&s, "RssAnon:") {
                        peak.anon_bytes = peak.anon_bytes.max(anon);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            peak
        })
    };
    let out = child.wait_with_output();
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().ok()?;
    let out = out.ok()?;
    if !out.status.success() {
        eprintln!(
            "  failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    let value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last()?).ok()?;
    Some((value, peak))
}

/// A benchmark option from the environment (`None` when unset; a value that does not parse is
/// a mistake worth stopping for).
pub fn bench_env<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a valid value")),
    )
}

/// `DOCTUNE_BENCH_THREADS`, by default every core.
pub fn bench_threads() -> usize {
    bench_env("DOCTUNE_BENCH_THREADS")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
