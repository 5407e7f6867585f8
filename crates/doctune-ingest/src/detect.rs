//! File type detection by magic bytes and container structure.
//!
//! - `%PDF-` → PDF; `{\rtf` → RTF.
//! - ZIP containers are told apart by their entries (never decompressing more than the 64-byte
//!   `mimetype` entry): `word/document.xml` → DOCX, `xl/workbook.xml` → XLSX, `mimetype` of
//!   `application/vnd.oasis.opendocument.text` → ODT, `application/epub+zip` → EPUB.
//! - Otherwise the first 8 KiB decide between text (UTF-8, UTF-16 with BOM, or 8-bit text without
//!   NULs) and binary. Text is HTML when it starts like HTML, JSON/JSONL when it parses as such
//!   at the start, and Markdown/CSV/TSV/plain by extension.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

/// How many leading bytes text classification looks at.
pub const SNIFF_BYTES: usize = 8192;

/// A document format DocTune knows about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pdf,
    Docx,
    Odt,
    Epub,
    Rtf,
    Html,
    Markdown,
    Text,
    Csv,
    Tsv,
    Xlsx,
    Json,
    Jsonl,
    /// A ZIP archive that is none of the office/e-book formats above.
    Zip,
    /// Binary content of no supported kind.
    Unknown,
}

impl Format {
    /// A short label for people ("PDF", "Markdown").
    pub fn label(self) -> &'static str {
        match self {
            Format::Pdf => "PDF",
            Format::Docx => "DOCX",
            Format::Odt => "ODT",
            Format::Epub => "EPUB",
            Format::Rtf => "RTF",
            Format::Html => "HTML",
            Format::Markdown => "Markdown",
            Format::Text => "Text",
            Format::Csv => "CSV",
            Format::Tsv => "TSV",
            Format::Xlsx => "XLSX",
            Format::Json => "JSON",
            Format::Jsonl => "JSONL",
            Format::Zip => "ZIP",
            Format::Unknown => "unknown",
        }
    }

    /// The formats a file with this extension would be expected to have.
    fn from_extension(ext: &str) -> Option<&'static [Format]> {
        use Format::*;
        Some(match ext.to_ascii_lowercase().as_str() {
            "pdf" => &[Pdf],
            "docx" => &[Docx],
            "odt" => &[Odt],
            "epub" => &[Epub],
            "rtf" => &[Rtf],
            "html" | "htm" | "xhtml" => &[Html],
            "md" | "markdown" | "mdown" => &[Markdown, Text],
            "txt" | "text" => &[Text],
            "csv" => &[Csv, Text],
            "tsv" | "tab" => &[Tsv, Text],
            "xlsx" => &[Xlsx],
            "json" => &[Json, Jsonl],
            "jsonl" | "ndjson" => &[Jsonl, Json],
            "zip" => &[Zip, Docx, Odt, Epub, Xlsx],
            _ => return None,
        })
    }

    /// Whether a file of this format can hold instruction data (rows of prompts and replies
    /// or conversations) that `dataset build --mode instruct` reads: JSON, JSONL, CSV, TSV.
    pub fn is_instruction_data(self) -> bool {
        matches!(
            self,
            Format::Json | Format::Jsonl | Format::Csv | Format::Tsv
        )
    }

    /// Whether DocTune can take text from this format.
    pub fn is_supported(self) -> bool {
        !matches!(self, Format::Zip | Format::Unknown)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The result of [`detect`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detection {
    pub format: Format,
    /// Set when the extension promises something other than the content is.
    pub mismatch: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Detects the format of the file at `path` from its content; the extension is a hint.
pub fn detect(path: &Path) -> Result<Detection, DetectError> {
    let io_err = |source| DetectError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let ext = path.extension().and_then(|e| e.to_str());
    detect_reader(file, ext).map_err(io_err)
}

/// Detects the format of seekable content, with an optional extension hint (no dot).
pub fn detect_reader<R: Read + Seek>(mut r: R, ext: Option<&str>) -> io::Result<Detection> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut r).take(SNIFF_BYTES as u64).read_to_end(&mut head)?;
    let format = if head.starts_with(b"%PDF-") {
        Format::Pdf
    } else if head.starts_with(b"{\\rtf") {
        Format::Rtf
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        r.rewind()?;
        zip_kind(r)
    } else {
        text_kind(&head, ext)
    };
    let mismatch = ext.and_then(|e| {
        let expected = Format::from_extension(e)?;
        (!expected.contains(&format)).then(|| {
            format!(
                "the extension says .{e} but the content is {}",
                describe(format)
            )
        })
    });
    Ok(Detection { format, mismatch })
}

fn describe(f: Format) -> &'static str {
    match f {
        Format::Unknown => "not a supported document type",
        Format::Zip => "a ZIP archive",
        other => other.label(),
    }
}

fn zip_kind<R: Read + Seek>(r: R) -> Format {
    let Ok(mut zip) = zip::ZipArchive::new(r) else {
        // Starts like a ZIP but has no readable central directory: truncated or not a ZIP.
        return Format::Unknown;
    };
    let has = |z: &zip::ZipArchive<R>, name: &str| z.index_for_name(name).is_some();
    if has(&zip, "word/document.xml") {
        return Format::Docx;
    }
    if has(&zip, "xl/workbook.xml") {
        return Format::Xlsx;
    }
    let mut mimetype = String::new();
    if let Ok(entry) = zip.by_name("mimetype") {
        // A valid mimetype entry is tiny; read at most 64 bytes, whatever it claims.
        let _ = entry.take(64).read_to_string(&mut mimetype);
    }
    match mimetype.trim() {
        "application/vnd.oasis.opendocument.text" => Format::Odt,
        "application/epub+zip" => Format::Epub,
        _ => Format::Zip,
    }
}

fn text_kind(head: &[u8], ext: Option<&str>) -> Format {
    let text: String = if let Some(rest) = head.strip_prefix(b"\xEF\xBB\xBF") {
        String::from_utf8_lossy(rest).into_owned()
    } else if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
        let le = head[0] == 0xFF;
        let units: Vec<u16> = head[2..]
            .chunks_exact(2)
            .map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16_lossy(&units)
    } else if head.contains(&0) {
        return Format::Unknown;
    } else {
        match std::str::from_utf8(head) {
            Ok(s) => s.to_owned(),
            // Possibly a multi-byte character cut at the sniff boundary.
            Err(e) if e.error_len().is_none() => {
                String::from_utf8_lossy(&head[..e.valid_up_to()]).into_owned()
            }
            Err(_) if looks_like_8bit_text(head) => String::from_utf8_lossy(head).into_owned(),
            Err(_) => return Format::Unknown,
        }
    };
    let trimmed = text.trim_start();
    let lower: String = trimmed.chars().take(512).collect::<String>().to_lowercase();
    if lower.starts_with("<!doctype html")
        || lower.starts_with("<html")
        || (lower.starts_with("<?xml") && lower.contains("<html"))
    {
        return Format::Html;
    }
    let ext = ext.map(str::to_ascii_lowercase);
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let jsonl_ext = matches!(ext.as_deref(), Some("jsonl" | "ndjson"));
        let lines: Vec<&str> = trimmed.lines().filter(|l| !l.trim().is_empty()).collect();
        let objects_per_line =
            lines.len() > 1 && lines.iter().all(|l| l.trim_start().starts_with('{'));
        if jsonl_ext || (objects_per_line && lines[0].trim_end().ends_with('}')) {
            return Format::Jsonl;
        }
        if matches!(ext.as_deref(), Some("json")) || trimmed.starts_with('[') {
            return Format::Json;
        }
    }
    match ext.as_deref() {
        Some("md" | "markdown" | "mdown") => Format::Markdown,
        Some("csv") => Format::Csv,
        Some("tsv" | "tab") => Format::Tsv,
        Some("html" | "htm" | "xhtml") => Format::Html,
        _ => Format::Text,
    }
}

/// Latin-1 / Windows-1252 text: no NULs, and few C0 controls other than whitespace.
fn looks_like_8bit_text(head: &[u8]) -> bool {
    let controls = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0C))
        .count();
    controls * 100 <= head.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::zip_with;
    use std::io::Cursor;

    fn det(bytes: &[u8], ext: Option<&str>) -> Detection {
        detect_reader(Cursor::new(bytes.to_vec()), ext).unwrap()
    }

    #[test]
    fn magic_bytes() {
        assert_eq!(det(b"%PDF-1.7\n...", Some("pdf")).format, Format::Pdf);
        assert_eq!(det(b"{\\rtf1\\ansi hi}", Some("rtf")).format, Format::Rtf);
        assert_eq!(
            det(b"\x7fELF\x02\x01\x01\0\0", None).format,
            Format::Unknown
        );
    }

    #[test]
    fn zip_containers_by_structure() {
        let docx = zip_with(&[
            ("[Content_Types].xml", b"<x/>"),
            ("word/document.xml", b"<w/>"),
        ]);
        assert_eq!(det(&docx, Some("docx")).format, Format::Docx);
        let xlsx = zip_with(&[("xl/workbook.xml", b"<w/>")]);
        assert_eq!(det(&xlsx, Some("xlsx")).format, Format::Xlsx);
        let odt = zip_with(&[("mimetype", b"application/vnd.oasis.opendocument.text")]);
        assert_eq!(det(&odt, Some("odt")).format, Format::Odt);
        let epub = zip_with(&[("mimetype", b"application/epub+zip")]);
        assert_eq!(det(&epub, None).format, Format::Epub);
        let other = zip_with(&[("a.txt", b"a")]);
        assert_eq!(det(&other, Some("zip")).format, Format::Zip);
        // Truncated: starts like a zip, no central directory.
        assert_eq!(det(&docx[..20], Some("docx")).format, Format::Unknown);
    }

    #[test]
    fn text_kinds() {
        assert_eq!(det(b"  <!DOCTYPE html><p>x", None).format, Format::Html);
        assert_eq!(det(b"# Title\n\ntext", Some("md")).format, Format::Markdown);
        assert_eq!(det(b"a,b\n1,2\n", Some("csv")).format, Format::Csv);
        assert_eq!(det(b"a\tb\n1\t2\n", Some("tsv")).format, Format::Tsv);
        assert_eq!(det(b"{\"a\":1}\n{\"a\":2}\n", None).format, Format::Jsonl);
        assert_eq!(det(b"{\"a\": [1, 2]}", Some("json")).format, Format::Json);
        assert_eq!(det(b"[1,2]", None).format, Format::Json);
        assert_eq!(
            det("héllo wörld".as_bytes(), Some("txt")).format,
            Format::Text
        );
        // Windows-1252 bytes (not UTF-8) are still text.
        assert_eq!(det(b"caf\xe9 cr\xe8me", Some("txt")).format, Format::Text);
        // UTF-16 LE with BOM.
        let mut u16le = vec![0xFF, 0xFE];
        for u in "<html><body>hi".encode_utf16() {
            u16le.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(det(&u16le, None).format, Format::Html);
        assert_eq!(det(b"", Some("txt")).format, Format::Text);
    }

    #[test]
    fn mismatches_are_reported() {
        let d = det(b"%PDF-1.4", Some("docx"));
        assert_eq!(d.format, Format::Pdf);
        assert_eq!(
            d.mismatch.as_deref(),
            Some("the extension says .docx but the content is PDF")
        );
        let d = det(b"\x00\x01\x02binary", Some("txt"));
        assert_eq!(
            d.mismatch.as_deref(),
            Some("the extension says .txt but the content is not a supported document type")
        );
        assert_eq!(det(b"plain", Some("md")).mismatch, None);
        assert_eq!(det(b"plain", Some("weird")).mismatch, None);
    }

    #[test]
    fn detect_reads_a_file_and_names_it_on_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.pdf");
        std::fs::write(&p, b"%PDF-1.5").unwrap();
        assert_eq!(detect(&p).unwrap().format, Format::Pdf);
        let err = detect(&d.path().join("missing.pdf")).unwrap_err();
        assert!(err.to_string().contains("missing.pdf"));
    }
}
