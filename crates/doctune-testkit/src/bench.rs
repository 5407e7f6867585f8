//! The benchmarks' process helpers: peak memory, running a worker and reading its JSON answer,
//! and their options from the environment.

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
