//! The result of extraction, its limits and its errors, and the builder the formats share.

use crate::clean;
use crate::Format;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bumped whenever extraction output changes, so cached text is re-extracted (2: workbooks
/// streamed cell by cell, warnings capped, HTML depth and PDF form limits).
pub const EXTRACTOR_VERSION: u32 = 2;

/// Bounds on what one document may cost. Defaults are listed in SECURITY.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Largest file read (default 512 MiB).
    pub max_file_bytes: u64,
    /// Most PDF pages (default 5,000).
    pub max_pages: u32,
    /// Largest single entry of a ZIP container after decompression (default 256 MiB).
    pub max_entry_bytes: u64,
    /// All entries of a ZIP container together after decompression (default 1 GiB).
    pub max_total_bytes: u64,
    /// Largest decompressed:compressed ratio of a ZIP entry over 1 MiB (default 200).
    pub max_ratio: u64,
    /// Deepest XML nesting (default 256). DTDs are always refused, so no entity is ever expanded.
    pub max_xml_depth: usize,
    /// Most characters of text (default 100 million).
    pub max_chars: usize,
    /// Most records from a JSON/JSONL/CSV/XLSX file (default 1 million).
    pub max_records: usize,
    /// Deepest HTML/XHTML nesting (default 4,096): elements left open at once, not counting void
    /// elements and those whose end tag is optional. Checked before parsing, because html5ever's
    /// cost grows with the square of it.
    pub max_markup_depth: usize,
    /// Most cells with a value in one workbook (default 10 million). Cells are streamed, never
    /// laid out as the sheet's dense range, so the distance between cells costs nothing.
    pub max_cells: u64,
    /// Largest decoded size of one PDF stream — content, form, font, object stream — after all
    /// its filters (default 256 MiB). Checked while decoding, before lopdf keeps any of it.
    pub max_stream_bytes: u64,
    /// Deepest nesting of PDF form XObjects drawn inside each other (default 32). A form that
    /// draws itself, directly or through others, is refused whatever the depth.
    pub max_form_depth: u32,
    /// Most form XObjects one page draws, counting each use (default 100,000): forms that each
    /// draw the next many times would otherwise multiply the work at every level.
    pub max_form_draws: u64,
    /// Wall time for one document (default 120 s); past it the worker is killed.
    #[serde(with = "secs")]
    pub timeout: Duration,
    /// CPU time for one document's worker process (default 120 s; Unix `RLIMIT_CPU`).
    #[serde(with = "secs")]
    pub cpu_time: Duration,
    /// Address space of one document's worker process (default 2 GiB; Linux `RLIMIT_AS`). See
    /// `worker` for what each platform enforces.
    pub max_memory_bytes: u64,
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 512 << 20,
            max_pages: 5_000,
            max_entry_bytes: 256 << 20,
            max_total_bytes: 1 << 30,
            max_ratio: 200,
            max_xml_depth: 256,
            max_chars: 100_000_000,
            max_records: 1_000_000,
            max_markup_depth: 4_096,
            max_cells: 10_000_000,
            max_stream_bytes: 256 << 20,
            max_form_depth: 32,
            max_form_draws: 100_000,
            timeout: Duration::from_secs(120),
            cpu_time: Duration::from_secs(120),
            max_memory_bytes: 2 << 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SectionKind {
    Page,
    Heading,
    Chapter,
    Sheet,
}

/// A span of [`Document::text`], in character offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Section {
    pub kind: SectionKind,
    /// "page 3", a heading's text, a sheet's or chapter's name.
    pub label: String,
    pub start: usize,
    pub end: usize,
}

/// One extracted document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub source: PathBuf,
    pub sha256: String,
    pub format: Format,
    pub title: Option<String>,
    /// Clean text: paragraphs separated by a blank line.
    pub text: String,
    pub sections: Vec<Section>,
    /// PDF pages (0 for other formats).
    pub pages: u32,
    /// JSON/JSONL rows, kept as records for the dataset step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<serde_json::Value>>,
    pub warnings: Vec<String>,
}

/// Why a file could not be extracted. Every message names the file. Serialisable, so the
/// extraction worker can send it to its parent (an I/O error travels as its kind and message).
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum IngestError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        #[serde(with = "io_error")]
        source: std::io::Error,
    },
    #[error("{path}: not a regular file")]
    NotRegularFile { path: PathBuf },
    #[error("{path}: the file is empty")]
    Empty { path: PathBuf },
    #[error("{path}: {size} bytes is more than the {limit}-byte limit")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{path}: unsupported format ({})", detected.label())]
    Unsupported { path: PathBuf, detected: Format },
    #[error("{path}: the PDF is encrypted with a password; remove the password and add it again")]
    Encrypted { path: PathBuf },
    #[error("{path}: damaged or truncated: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: refused as a ZIP bomb: {reason}")]
    ZipBomb { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    LimitExceeded { path: PathBuf, reason: String },
    #[error("{path}: more than {limit} characters of text")]
    TooMuchText { path: PathBuf, limit: usize },
    #[error("{path}: extraction took longer than {secs} s and was stopped")]
    Timeout { path: PathBuf, secs: u64 },
    #[error("{path}: extraction needed more than {} of memory and was stopped", gib(*limit))]
    OutOfMemory { path: PathBuf, limit: u64 },
    #[error("{path}: extraction used more than {secs} s of CPU time and was stopped")]
    CpuLimit { path: PathBuf, secs: u64 },
    #[error("{path}: extraction failed: {reason}")]
    Crashed { path: PathBuf, reason: String },
    #[error("extraction was cancelled")]
    Cancelled,
}

impl IngestError {
    /// The same error about `path` — how a caller names the file to its user when it extracted
    /// a copy (a project's `documents/…`) of what the user gave.
    pub fn with_path(self, path: impl Into<PathBuf>) -> Self {
        use IngestError::*;
        let p = path.into();
        match self {
            Io { source, .. } => Io { path: p, source },
            NotRegularFile { .. } => NotRegularFile { path: p },
            Empty { .. } => Empty { path: p },
            TooLarge { size, limit, .. } => TooLarge {
                path: p,
                size,
                limit,
            },
            Unsupported { detected, .. } => Unsupported { path: p, detected },
            Encrypted { .. } => Encrypted { path: p },
            Corrupt { reason, .. } => Corrupt { path: p, reason },
            ZipBomb { reason, .. } => ZipBomb { path: p, reason },
            LimitExceeded { reason, .. } => LimitExceeded { path: p, reason },
            TooMuchText { limit, .. } => TooMuchText { path: p, limit },
            Timeout { secs, .. } => Timeout { path: p, secs },
            OutOfMemory { limit, .. } => OutOfMemory { path: p, limit },
            CpuLimit { secs, .. } => CpuLimit { path: p, secs },
            Crashed { reason, .. } => Crashed { path: p, reason },
            Cancelled => Cancelled,
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn limit(path: &Path, reason: impl Into<String>) -> Self {
        Self::LimitExceeded {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// A byte count as the limits are written: "2 GiB", "512 MiB", else bytes.
fn gib(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b => format!("{b} bytes"),
    }
}

/// An I/O error as its kind and message (`std::io::Error` has no serde form).
mod io_error {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wire {
        kind: String,
        message: String,
    }

    pub fn serialize<S: Serializer>(e: &std::io::Error, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            kind: format!("{:?}", e.kind()),
            message: e.to_string(),
        }
        .serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::io::Error, D::Error> {
        use std::io::ErrorKind::*;
        let w = Wire::deserialize(d)?;
        let kind = [
            NotFound,
            PermissionDenied,
            StorageFull,
            InvalidData,
            UnexpectedEof,
        ]
        .into_iter()
        .find(|k| format!("{k:?}") == w.kind)
        .unwrap_or(Other);
        Ok(std::io::Error::new(kind, w.message))
    }
}

/// Warnings kept per document; past this one last line counts the rest, so a file of a million
/// broken rows cannot grow the document, its cache or `project.json` (which every command reads).
pub const MAX_WARNINGS_KEPT: usize = 100;

/// Adds a warning to `warnings`, keeping the first [`MAX_WARNINGS_KEPT`] and counting the rest
/// in one last line.
pub(crate) fn warn(warnings: &mut Vec<String>, message: String) {
    const MORE: &str = " more warnings (only the first ";
    if warnings.len() < MAX_WARNINGS_KEPT {
        warnings.push(message);
        return;
    }
    let more = warnings
        .get(MAX_WARNINGS_KEPT)
        .and_then(|l| {
            l.strip_prefix("… and ")?
                .split(MORE)
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    warnings.truncate(MAX_WARNINGS_KEPT);
    warnings.push(format!(
        "… and {}{MORE}{MAX_WARNINGS_KEPT} are kept)",
        more + 1
    ));
}

/// Accumulates clean paragraphs and the sections over them.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    text: String,
    chars: usize,
    sections: Vec<Section>,
    open: Vec<usize>,
    pub title: Option<String>,
    pub warnings: Vec<String>,
    pub pages: u32,
}

impl Builder {
    /// A builder that starts with these warnings.
    pub fn with_warnings(warnings: Vec<String>) -> Self {
        Self {
            warnings,
            ..Self::default()
        }
    }

    /// Adds a paragraph (cleaned; nothing is added if it is blank).
    pub fn paragraph(&mut self, raw: &str) {
        let p = clean::paragraph(raw);
        if p.is_empty() {
            return;
        }
        if !self.text.is_empty() {
            self.text.push_str("\n\n");
            self.chars += 2;
        }
        self.chars += p.chars().count();
        self.text.push_str(&p);
    }

    /// Adds a heading paragraph and a heading section that runs to the next heading.
    pub fn heading(&mut self, raw: &str) {
        let h = clean::paragraph(raw);
        if h.is_empty() {
            return;
        }
        if self.title.is_none() {
            self.title = Some(h.clone());
        }
        self.close(SectionKind::Heading);
        self.paragraph(&h);
        let start = self.chars - h.chars().count();
        self.sections.push(Section {
            kind: SectionKind::Heading,
            label: h,
            start,
            end: start,
        });
        self.open.push(self.sections.len() - 1);
    }

    /// Opens a page/chapter/sheet section at the current end of text.
    pub fn begin(&mut self, kind: SectionKind, label: impl Into<String>) {
        self.close(kind);
        let start = if self.text.is_empty() {
            0
        } else {
            self.chars + 2
        };
        self.sections.push(Section {
            kind,
            label: label.into(),
            start,
            end: start,
        });
        self.open.push(self.sections.len() - 1);
    }

    fn close(&mut self, kind: SectionKind) {
        let end = self.chars;
        self.open.retain(|&i| {
            let s = &mut self.sections[i];
            if s.kind == kind {
                // An empty section (say, a page without text) ends where it starts.
                s.start = s.start.min(end);
                s.end = end;
                false
            } else {
                true
            }
        });
    }

    pub fn finish(mut self, format: Format) -> Document {
        let end = self.chars;
        for &i in &self.open {
            let s = &mut self.sections[i];
            s.start = s.start.min(end);
            s.end = end;
        }
        Document {
            source: PathBuf::new(),
            sha256: String::new(),
            format,
            title: self.title,
            text: self.text,
            sections: self.sections,
            pages: self.pages,
            records: None,
            warnings: {
                let mut w = self.warnings;
                if w.len() > MAX_WARNINGS_KEPT + 1 {
                    let extra: Vec<String> = w.split_off(MAX_WARNINGS_KEPT);
                    for m in extra {
                        warn(&mut w, m);
                    }
                }
                w
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_keep_the_first_hundred_and_count_the_rest() {
        let mut w = Vec::new();
        for i in 0..1_000_000 {
            warn(&mut w, format!("line {i}: broken"));
        }
        assert_eq!(w.len(), MAX_WARNINGS_KEPT + 1);
        assert_eq!(w[0], "line 0: broken");
        assert_eq!(
            w[MAX_WARNINGS_KEPT],
            "… and 999900 more warnings (only the first 100 are kept)"
        );
    }

    #[test]
    fn errors_can_name_the_file_as_the_user_knows_it() {
        let e =
            IngestError::corrupt(Path::new("/p/documents/a.pdf"), "bad xref").with_path("~/a.pdf");
        assert_eq!(e.to_string(), "~/a.pdf: damaged or truncated: bad xref");
        assert!(matches!(
            IngestError::Cancelled.with_path("x"),
            IngestError::Cancelled
        ));
    }

    #[test]
    fn sections_have_char_offsets_into_the_text() {
        let mut b = Builder::default();
        b.begin(SectionKind::Page, "page 1");
        b.heading("  Über   alles ");
        b.paragraph("first\u{7} para");
        b.begin(SectionKind::Page, "page 2");
        b.paragraph("   ");
        b.paragraph("second");
        let d = b.finish(Format::Text);
        assert_eq!(d.text, "Über alles\n\nfirst para\n\nsecond");
        assert_eq!(d.title.as_deref(), Some("Über alles"));
        let chars: Vec<char> = d.text.chars().collect();
        let s = |i: usize| {
            chars[d.sections[i].start..d.sections[i].end]
                .iter()
                .collect::<String>()
        };
        assert_eq!(s(0), "Über alles\n\nfirst para");
        assert_eq!(
            s(1),
            "Über alles\n\nfirst para\n\nsecond",
            "the heading runs to the end"
        );
        assert_eq!(s(2), "second");
    }
}
