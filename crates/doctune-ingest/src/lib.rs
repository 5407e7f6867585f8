//! Document ingestion: any common document to clean text worth training on, safely.
//!
//! - [`detect`]: what a file *is*, from its content; the extension is a hint and a mismatch is
//!   reported.
//! - [`extract`]: the [`Document`] of a file — text, title, sections (pages, headings, sheets,
//!   chapters) with character offsets, warnings — or a specific [`IngestError`] that names the
//!   file. JSON/JSONL become [`Document::records`], not prose.
//! - [`Limits`]: every bound on hostile input (size, pages, ZIP expansion and ratio, XML depth,
//!   markup depth, cells, PDF stream size and form nesting, output size, time, CPU, memory).
//! - [`worker`]: in a binary that serves [`worker::JOB`] through `doctune_core::worker` (the CLI,
//!   the app), every parser runs in a child process with memory, CPU and wall-clock limits and is
//!   killed when it passes one, so an abort, a stack overflow or an allocation failure ends only
//!   the child.
//!   Elsewhere, and inside that child, extraction runs on a thread with a large stack under
//!   `catch_unwind` and a deadline, so a parser panic becomes an error.
//! - [`clean`]: Unicode NFC, control characters removed, whitespace normalised; PDF ligatures,
//!   line-end hyphenation and repeated page headers/footers repaired.

pub mod clean;
pub mod detect;
mod document;
mod html;
mod office;
mod pdf;
mod rtf;
mod text;
pub mod worker;
mod xml;

pub use detect::{detect, detect_reader, DetectError, Detection, Format};
pub use document::{
    Document, IngestError, Limits, Section, SectionKind, EXTRACTOR_VERSION, MAX_WARNINGS_KEPT,
};

use doctune_core::{CancelToken, JobEvent, ProgressSink};
use std::path::Path;
use std::sync::mpsc;

/// Extracts the text of the file at `path`. The file must be a regular file within
/// `limits.max_file_bytes`; its format is detected from content. Progress (pages) goes to `sink`;
/// `cancel` is checked between units of work.
pub fn extract(
    path: &Path,
    limits: &Limits,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Document, IngestError> {
    let meta = std::fs::metadata(path).map_err(|e| IngestError::io(path, e))?;
    if !meta.is_file() {
        return Err(IngestError::NotRegularFile { path: path.into() });
    }
    if meta.len() > limits.max_file_bytes {
        return Err(IngestError::TooLarge {
            path: path.into(),
            size: meta.len(),
            limit: limits.max_file_bytes,
        });
    }
    if meta.len() == 0 {
        return Err(IngestError::Empty { path: path.into() });
    }
    let bytes = std::fs::read(path).map_err(|e| IngestError::io(path, e))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_string);
    let detection = detect_reader(std::io::Cursor::new(&bytes), ext.as_deref())
        .map_err(|e| IngestError::io(path, e))?;
    if !detection.format.is_supported() {
        return Err(IngestError::Unsupported {
            path: path.into(),
            detected: detection.format,
        });
    }

    let mut doc = if doctune_core::worker::enabled() {
        worker::extract_in_child(path, detection.format, bytes, limits, sink, cancel)?
    } else {
        isolated(path, detection.format, bytes, limits, sink, cancel)?
    };
    if let Some(m) = detection.mismatch {
        doc.warnings.insert(0, m);
    }
    if doc.text.chars().count() > limits.max_chars {
        return Err(IngestError::TooMuchText {
            path: path.into(),
            limit: limits.max_chars,
        });
    }
    Ok(doc)
}

/// Runs the extractor of `format` on a worker thread with a 64 MiB stack, under `catch_unwind`,
/// with the deadline `limits.timeout`; forwards its events to `sink` and `cancel` to it. A parser
/// panic becomes [`IngestError::Corrupt`]; past the deadline the worker is told to stop and
/// abandoned, and the call returns [`IngestError::Timeout`].
#[doc(hidden)]
pub fn isolated(
    path: &Path,
    format: Format,
    bytes: Vec<u8>,
    limits: &Limits,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Document, IngestError> {
    // Isolate the parsers: a worker thread with a generous stack, panics caught, a deadline.
    let (tx, rx) = mpsc::sync_channel(1);
    let worker_cancel = CancelToken::new();
    let (events_tx, events_rx) = mpsc::channel::<JobEvent>();
    let owned_path = path.to_path_buf();
    let worker_limits = *limits;
    let wc = worker_cancel.clone();
    let spawned = std::thread::Builder::new()
        .name("doctune-extract".into())
        .stack_size(64 * 1024 * 1024)
        .spawn(move || {
            let sink = move |e: JobEvent| {
                let _ = events_tx.send(e);
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                extract_format(&owned_path, format, bytes, &worker_limits, &sink, &wc)
            }));
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(IngestError::io(path, e));
    }
    let deadline = std::time::Instant::now() + limits.timeout;
    let result = loop {
        while let Ok(e) = events_rx.try_recv() {
            sink.emit(e);
        }
        if cancel.is_cancelled() {
            worker_cancel.cancel();
            return Err(IngestError::Cancelled);
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            worker_cancel.cancel();
            return Err(IngestError::Timeout {
                path: path.into(),
                secs: limits.timeout.as_secs(),
            });
        }
        match rx.recv_timeout((deadline - now).min(std::time::Duration::from_millis(50))) {
            Ok(r) => break r,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(IngestError::Corrupt {
                    path: path.into(),
                    reason: "the extractor stopped unexpectedly".into(),
                })
            }
        }
    };
    while let Ok(e) = events_rx.try_recv() {
        sink.emit(e);
    }
    let doc = match result {
        Ok(r) => r?,
        Err(panic) => {
            let detail = doctune_core::panic_message(panic.as_ref());
            return Err(IngestError::Corrupt {
                path: path.into(),
                reason: format!(
                    "the {} parser failed on this file ({detail})",
                    format.label()
                ),
            });
        }
    };
    Ok(doc)
}

/// Runs the extractor of `format` on `bytes` directly on the calling thread — no isolation, no
/// deadline. For fuzzing and tests, which want to see a parser's panics; everything else calls
/// [`extract`].
#[doc(hidden)]
pub fn parse_as(format: Format, bytes: &[u8], limits: &Limits) -> Result<Document, IngestError> {
    extract_format(
        Path::new("fuzz-input"),
        format,
        bytes.to_vec(),
        limits,
        &doctune_core::NullSink,
        &CancelToken::new(),
    )
}

fn extract_format(
    path: &Path,
    format: Format,
    bytes: Vec<u8>,
    limits: &Limits,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Document, IngestError> {
    let mut doc = match format {
        Format::Pdf => pdf::extract(path, &bytes, limits, sink, cancel)?,
        Format::Docx => office::docx(path, &bytes, limits)?,
        Format::Odt => office::odt(path, &bytes, limits)?,
        Format::Epub => office::epub(path, &bytes, limits, cancel)?,
        Format::Xlsx => office::xlsx(path, &bytes, limits)?,
        Format::Rtf => rtf::extract(path, &bytes, limits)?,
        Format::Html => {
            let (s, w) = text::decode(&bytes);
            let mut d = html::extract(path, &s, limits)?;
            d.warnings.extend(w);
            d
        }
        Format::Markdown => text::markdown(path, &bytes),
        Format::Text => text::plain(path, &bytes),
        Format::Csv => text::delimited(path, &bytes, b',', limits)?,
        Format::Tsv => text::delimited(path, &bytes, b'\t', limits)?,
        Format::Json => text::json(path, &bytes, limits)?,
        Format::Jsonl => text::jsonl(path, &bytes, limits)?,
        Format::Zip | Format::Unknown => {
            return Err(IngestError::Unsupported {
                path: path.into(),
                detected: format,
            })
        }
    };
    doc.format = format;
    doc.sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    doc.source = path.to_path_buf();
    Ok(doc)
}

#[cfg(test)]
mod test_util {
    use std::io::{Cursor, Write};

    /// A ZIP archive holding these entries (deflated).
    pub(crate) fn zip_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut buf);
            for (name, data) in entries {
                z.start_file(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
                z.write_all(data).unwrap();
            }
            z.finish().unwrap();
        }
        buf.into_inner()
    }
}
