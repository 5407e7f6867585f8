//! Work on untrusted input in a child process: the calling binary started again in worker mode,
//! under memory, CPU and wall-clock limits, killed when it passes one. What kills a process
//! outright — an abort, a stack overflow, an allocation the system cannot satisfy, a loop — then
//! ends only the worker, and the caller learns which limit it hit ([`Death`]).
//!
//! A binary opts in by calling [`serve_if_worker`] first thing in `main` with the jobs it can
//! serve (the CLI and the desktop app serve document extraction and chat-template rendering,
//! through `doctune_api::serve_worker_if_asked`). Started as `BINARY --doctune-worker JOB MEM CPU`
//! it caps itself, then runs the job's function on its stdin and stdout and exits. The protocol on
//! those pipes belongs to the job: lines of JSON, with raw bytes where the job says so.
//!
//! How each limit is enforced:
//! - **wall clock**, all platforms: the parent waits for each answer until a deadline, then
//!   kills the child (SIGKILL / `TerminateProcess`) and reaps it before returning, so nothing runs
//!   on the input's behalf afterwards; cancelling does the same.
//! - **memory**: Linux, `RLIMIT_AS` set by the child on itself before it reads anything. Other
//!   Unix systems get the same call, but macOS does not enforce `RLIMIT_AS`, so there only the
//!   deadline bounds a runaway allocation. Windows: not capped (a job object with
//!   `JOB_OBJECT_LIMIT_PROCESS_MEMORY` is the mechanism; not built yet).
//! - **CPU time**: Unix, `RLIMIT_CPU` (the kernel sends SIGXCPU). Windows: the deadline only (a
//!   job object's `PerProcessUserTimeLimit` would add it).
//! - Unix also sets `RLIMIT_CORE` 0 (no core dump of a user's document) and `RLIMIT_FSIZE` 0 (a
//!   worker writes no files); on Linux the child is killed if its parent dies.

use crate::CancelToken;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The first argument that starts a binary in worker mode.
pub const WORKER_ARG: &str = "--doctune-worker";

/// How much of a worker's stderr is kept to explain its end.
const STDERR_TAIL: usize = 16 << 10;

/// A job a worker can run: its input and output are the process's stdin and stdout, already
/// capped; the return value is the exit status.
pub type Serve = fn(&mut dyn BufRead, &mut (dyn Write + Send)) -> i32;

/// The executable started as the worker, once this binary said it can be one.
static WORKER: OnceLock<PathBuf> = OnceLock::new();

/// Call first in `main`. Started as a worker (`--doctune-worker JOB MEM CPU`), this runs `JOB`
/// from `jobs` under the caps and exits; otherwise it records that this binary can be its own
/// worker, so [`enabled`] is true from then on.
pub fn serve_if_worker(jobs: &[(&str, Serve)]) {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.first().map(|a| a.as_os_str()) == Some(OsStr::new(WORKER_ARG)) {
        std::process::exit(serve(jobs, &args[1..]));
    }
    if let Ok(exe) = std::env::current_exe() {
        let _ = WORKER.set(exe);
    }
}

/// Whether this binary called [`serve_if_worker`], so [`Worker::start`] can start it.
pub fn enabled() -> bool {
    WORKER.get().is_some()
}

fn serve(jobs: &[(&str, Serve)], args: &[std::ffi::OsString]) -> i32 {
    let arg = |i: usize| args.get(i).and_then(|a| a.to_str());
    let (Some(job), Some(mem), Some(cpu)) = (
        arg(0),
        arg(1).and_then(|a| a.parse().ok()),
        arg(2).and_then(|a| a.parse().ok()),
    ) else {
        return 2;
    };
    let Some((_, run)) = jobs.iter().find(|(name, _)| *name == job) else {
        return 2;
    };
    cap_self(mem, cpu);
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut output = std::io::stdout();
    run(&mut input, &mut output)
}

/// The limits of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Wall time for each answer (the parent's deadline).
    pub timeout: Duration,
    /// CPU time of the whole worker process (Unix `RLIMIT_CPU`; at least one second).
    pub cpu_time: Duration,
    /// Address space of the worker process (Linux `RLIMIT_AS`).
    pub max_memory_bytes: u64,
}

/// The worker's limits on itself (see the module comment for what each platform enforces).
#[cfg(unix)]
fn cap_self(max_memory_bytes: u64, cpu_secs: u64) {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let set = |resource, current: u64, maximum: u64| {
        let _ = setrlimit(
            resource,
            Rlimit {
                current: Some(current),
                maximum: Some(maximum),
            },
        );
    };
    let cpu = cpu_secs.max(1);
    set(Resource::As, max_memory_bytes, max_memory_bytes);
    // SIGXCPU at the soft limit; the hard limit (SIGKILL) two seconds later in case it is caught.
    set(Resource::Cpu, cpu, cpu + 2);
    set(Resource::Core, 0, 0);
    set(Resource::Fsize, 0, 0);
    #[cfg(target_os = "linux")]
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
}

#[cfg(not(unix))]
fn cap_self(_max_memory_bytes: u64, _cpu_secs: u64) {}

/// Why a worker gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The answer did not come before the deadline; the worker was killed.
    Deadline,
    /// The caller cancelled; the worker was killed.
    Cancelled,
    /// The worker ended by itself without answering.
    Died(Death),
}

/// How a worker ended without answering, from its exit and the last of its stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Death {
    /// An allocation failed under the memory cap (the runtime says so on stderr).
    OutOfMemory,
    /// The CPU-time limit (SIGXCPU).
    CpuTime,
    /// A thread ran out of stack.
    StackOverflow,
    /// Another signal.
    Signal(i32),
    /// It exited (with this status) without an answer, or wrote one that did not parse.
    Exited(String),
}

/// A running worker. Dropping it kills and reaps the child.
#[derive(Debug)]
pub struct Worker {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Vec<u8>>,
    stderr: Option<JoinHandle<String>>,
}

impl Worker {
    /// Starts this binary as a worker for `job` under `caps`. Fails when the binary never
    /// called [`serve_if_worker`] or the process cannot start.
    pub fn start(job: &str, caps: &Caps) -> std::io::Result<Worker> {
        let exe = WORKER.get().ok_or_else(|| {
            std::io::Error::other("this program cannot start workers (serve_if_worker not called)")
        })?;
        Self::start_exe(exe, job, caps)
    }

    fn start_exe(exe: &Path, job: &str, caps: &Caps) -> std::io::Result<Worker> {
        let mut child = Command::new(exe)
            .arg(WORKER_ARG)
            .arg(job)
            .arg(caps.max_memory_bytes.to_string())
            .arg(caps.cpu_time.as_secs().max(1).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("the worker's pipes were not set up"));
        };
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match out.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if tx.send(line).is_err() => return,
                    Ok(_) => {}
                }
            }
        });
        let stderr = std::thread::spawn(move || tail_of(stderr));
        Ok(Worker {
            child: Some(child),
            stdin: Some(stdin),
            lines,
            stderr: Some(stderr),
        })
    }

    /// Writes `bytes` to the worker's stdin. A worker that died meanwhile makes this fail with a
    /// broken pipe; [`Worker::next_line`] then says why it died.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().ok_or(std::io::ErrorKind::BrokenPipe)?;
        stdin.write_all(bytes)?;
        stdin.flush()
    }

    /// Closes the worker's stdin (the end of its input).
    pub fn close_input(&mut self) {
        self.stdin = None;
    }

    /// The worker's next line of output (with its newline), waiting until `deadline` and
    /// watching `cancel`. Past the deadline or on cancel the worker is killed; a worker that
    /// ends without a line is reaped and its end explained.
    pub fn next_line(&mut self, deadline: Instant, cancel: &CancelToken) -> Result<Vec<u8>, Ended> {
        loop {
            if cancel.is_cancelled() {
                self.kill();
                return Err(Ended::Cancelled);
            }
            let now = Instant::now();
            if now >= deadline {
                self.kill();
                return Err(Ended::Deadline);
            }
            match self
                .lines
                .recv_timeout((deadline - now).min(Duration::from_millis(50)))
            {
                Ok(line) => return Ok(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(Ended::Died(self.died())),
            }
        }
    }

    /// Kills and reaps the worker (nothing if it already ended).
    pub fn kill(&mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the worker to exit after its last answer.
    pub fn finish(mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// The worker ended without answering (or answered nonsense): reap it and say why.
    pub fn died(&mut self) -> Death {
        self.stdin = None;
        let status = self.child.take().and_then(|mut c| {
            // A worker that wrote nonsense may still be running.
            let _ = c.kill();
            c.wait().ok()
        });
        let tail = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        why(status, &tail)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last [`STDERR_TAIL`] bytes the worker wrote to stderr, as text.
fn tail_of(mut stderr: impl Read) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2 * STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// How a worker ended, from its exit status and what the Rust runtime last wrote to stderr
/// ("memory allocation of N bytes failed", "has overflowed its stack").
fn why(status: Option<ExitStatus>, stderr: &str) -> Death {
    if stderr.contains("memory allocation of") {
        return Death::OutOfMemory;
    }
    if stderr.contains("has overflowed its stack") {
        return Death::StackOverflow;
    }
    match status {
        None => Death::Exited("could not be waited for".into()),
        Some(s) => match signal_of(&s) {
            Some(sig) if Some(sig) == cpu_signal() => Death::CpuTime,
            Some(sig) => Death::Signal(sig),
            None => Death::Exited(s.to_string()),
        },
    }
}

#[cfg(unix)]
fn signal_of(s: &ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(s)
}
#[cfg(not(unix))]
fn signal_of(_: &ExitStatus) -> Option<i32> {
    None
}

#[cfg(unix)]
fn cpu_signal() -> Option<i32> {
    Some(rustix::process::Signal::XCPU.as_raw())
}
#[cfg(not(unix))]
fn cpu_signal() -> Option<i32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaths_are_told_apart_by_stderr_and_signal() {
        assert_eq!(
            why(None, "memory allocation of 1073741824 bytes failed\n"),
            Death::OutOfMemory
        );
        assert_eq!(
            why(
                None,
                "\nthread 'doctune-extract' has overflowed its stack\nfatal runtime error: stack overflow\n"
            ),
            Death::StackOverflow
        );
        assert_eq!(
            why(None, ""),
            Death::Exited("could not be waited for".into())
        );
    }

    #[test]
    fn a_binary_that_never_opted_in_cannot_start_workers() {
        assert!(!enabled());
        let e = Worker::start(
            "extract",
            &Caps {
                timeout: Duration::from_secs(1),
                cpu_time: Duration::from_secs(1),
                max_memory_bytes: 1 << 30,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot start workers"), "{e}");
    }

    #[test]
    fn stderr_keeps_its_tail() {
        let long = "x".repeat(100_000) + "the end";
        let t = tail_of(long.as_bytes());
        assert!(t.len() <= 2 * STDERR_TAIL && t.ends_with("the end"));
    }
}
