//! Extraction as a job of a `doctune_core::worker` child process. In a binary that serves
//! [`JOB`] with [`serve`] (the CLI and the app do), [`crate::extract`] runs every parser in such
//! a child, capped at `Limits::max_memory_bytes` and `Limits::cpu_time` and killed at
//! `Limits::timeout` — so an abort, a stack overflow, an allocation failure or a loop ends only
//! the child, and the error names the file and the limit ("needed more than 2 GiB of memory").
//!
//! On the child's stdin: one line of JSON (the file's name, its format and the limits), then the
//! file's bytes — those the parent read from the handle it checked, so the child never opens a
//! path. On its stdout: one JSON line per progress event, then a last line with the document or
//! the error. Inside the child, extraction runs as in-process isolation does
//! ([`crate::isolated`]): its own thread with a 64 MiB stack, panics caught.

use crate::{Document, Format, IngestError, Limits};
use doctune_core::worker::{Caps, Death, Ended, Worker};
use doctune_core::{CancelToken, JobEvent, ProgressSink};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The job's name on the worker's command line.
pub const JOB: &str = "extract";

/// What the parent tells the worker before the file's bytes.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Job {
    path: PathBuf,
    format: Format,
    limits: Limits,
}

/// One line the worker writes.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Reply {
    Event(JobEvent),
    Done(Result<Document, IngestError>),
}

/// The worker's side: read the job and the bytes, extract, answer. Exit status 0 when it
/// answered (the answer may be an error), 2 when the parent sent something unreadable.
pub fn serve(input: &mut dyn BufRead, output: &mut (dyn Write + Send)) -> i32 {
    let mut header = Vec::new();
    if (&mut *input)
        .take(1 << 20)
        .read_until(b'\n', &mut header)
        .is_err()
    {
        return 2;
    }
    let Ok(job) = serde_json::from_slice::<Job>(&header) else {
        return 2;
    };
    let mut bytes = Vec::new();
    if (&mut *input)
        .take(job.limits.max_file_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .is_err()
    {
        return 2;
    }
    let output = std::sync::Mutex::new(output);
    let send = |reply: &Reply| {
        let mut out = output.lock().unwrap_or_else(|p| p.into_inner());
        let ok = serde_json::to_writer(&mut **out, reply).is_ok() && out.write_all(b"\n").is_ok();
        ok && out.flush().is_ok()
    };
    let sink = |e: JobEvent| {
        send(&Reply::Event(e));
    };
    // The parent enforces the deadline by killing this process.
    let result = crate::isolated(
        &job.path,
        job.format,
        bytes,
        &job.limits,
        &sink,
        &CancelToken::new(),
    );
    if send(&Reply::Done(result)) {
        0
    } else {
        2
    }
}

/// Runs the extractor of `format` on `bytes` in a worker process.
pub(crate) fn extract_in_child(
    path: &Path,
    format: Format,
    bytes: Vec<u8>,
    limits: &Limits,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Document, IngestError> {
    let caps = Caps {
        timeout: limits.timeout,
        cpu_time: limits.cpu_time,
        max_memory_bytes: limits.max_memory_bytes,
    };
    let deadline = Instant::now() + limits.timeout;
    let mut worker = Worker::start(JOB, &caps).map_err(|e| IngestError::Io {
        path: path.into(),
        source: std::io::Error::new(e.kind(), format!("cannot start the extraction worker: {e}")),
    })?;
    let mut header = serde_json::to_vec(&Job {
        path: path.into(),
        format,
        limits: *limits,
    })
    .expect("a job serialises");
    header.push(b'\n');
    // A worker that dies while reading makes these fail; its next line then says why.
    let _ = worker.send(&header).and_then(|_| worker.send(&bytes));
    drop(bytes);
    worker.close_input();
    loop {
        let line = match worker.next_line(deadline, cancel) {
            Ok(line) => line,
            Err(ended) => return Err(ended_error(path, format, limits, ended)),
        };
        match serde_json::from_slice::<Reply>(&line) {
            Ok(Reply::Event(e)) => sink.emit(e),
            Ok(Reply::Done(result)) => {
                worker.finish();
                return result;
            }
            Err(_) => {
                let death = worker.died();
                return Err(ended_error(path, format, limits, Ended::Died(death)));
            }
        }
    }
}

/// The error for a worker that gave no answer.
fn ended_error(path: &Path, format: Format, limits: &Limits, ended: Ended) -> IngestError {
    let parser = format.label();
    let crashed = |reason: String| IngestError::Crashed {
        path: path.into(),
        reason,
    };
    match ended {
        Ended::Cancelled => IngestError::Cancelled,
        Ended::Deadline => IngestError::Timeout {
            path: path.into(),
            secs: limits.timeout.as_secs(),
        },
        Ended::Died(Death::OutOfMemory) => IngestError::OutOfMemory {
            path: path.into(),
            limit: limits.max_memory_bytes,
        },
        Ended::Died(Death::CpuTime) => IngestError::CpuLimit {
            path: path.into(),
            secs: limits.cpu_time.as_secs().max(1),
        },
        Ended::Died(Death::StackOverflow) => crashed(format!(
            "the {parser} parser overflowed its stack (the file nests too deeply)"
        )),
        Ended::Died(Death::Signal(sig)) => {
            crashed(format!("the {parser} parser was killed by signal {sig}"))
        }
        Ended::Died(Death::Exited(status)) => crashed(format!(
            "the {parser} parser's worker ended ({status}) without an answer"
        )),
    }
}
