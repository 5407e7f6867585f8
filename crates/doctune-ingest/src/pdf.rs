//! PDF text layer, page by page (pdf-extract over lopdf): the page limit is checked before any
//! page is read, the cancel token between pages. Each page's lines are un-ligatured; lines that
//! repeat at the top or bottom of most pages (running headers, footers, page numbers) are
//! removed; a word hyphenated at a line end is joined. A page with no text gets the warning
//! "page N has no text layer (scanned?)". An encrypted PDF that opens without a password is read;
//! one that needs a password is refused.

use crate::clean;
use crate::document::{Builder, Document, SectionKind};
use crate::{Format, IngestError, Limits};
use doctune_core::{CancelToken, JobEvent, ProgressSink};
use std::path::Path;

pub(crate) fn extract(
    path: &Path,
    bytes: &[u8],
    limits: &Limits,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Document, IngestError> {
    let mut doc = pdf_extract::Document::load_mem(bytes)
        .map_err(|e| IngestError::corrupt(path, format!("not a readable PDF ({e})")))?;
    if doc.is_encrypted() && doc.decrypt("").is_err() {
        return Err(IngestError::Encrypted { path: path.into() });
    }
    let pages = doc.get_pages();
    if pages.len() > limits.max_pages as usize {
        return Err(IngestError::limit(
            path,
            format!(
                "{} pages, more than the {}-page limit",
                pages.len(),
                limits.max_pages
            ),
        ));
    }
    let total = pages.len() as u64;
    let mut warnings = Vec::new();
    let mut page_lines: Vec<Vec<String>> = Vec::with_capacity(pages.len());
    for (i, &num) in pages.keys().enumerate() {
        if cancel.is_cancelled() {
            return Err(IngestError::Cancelled);
        }
        sink.emit(JobEvent::progress(i as u64, total, "pages", None));
        let mut s = String::new();
        let read = {
            let mut out = pdf_extract::PlainTextOutput::new(&mut s);
            pdf_extract::output_doc_page(&doc, &mut out, num)
        };
        if let Err(e) = read {
            crate::document::warn(&mut warnings, format!("page {num} could not be read ({e})"));
        }
        page_lines.push(
            s.lines()
                .map(|l| clean::unligature(l).trim().to_string())
                .collect(),
        );
    }
    clean::strip_running_lines(&mut page_lines);

    let mut b = Builder::with_warnings(warnings);
    b.pages = total as u32;
    for (&num, lines) in pages.keys().zip(&page_lines) {
        b.begin(SectionKind::Page, format!("page {num}"));
        if lines.iter().all(|l| l.is_empty()) {
            b.warnings
                .push(format!("page {num} has no text layer (scanned?)"));
            continue;
        }
        for para in lines.split(|l| l.is_empty()) {
            let refs: Vec<&str> = para.iter().map(String::as_str).collect();
            b.paragraph(&clean::join_lines(&refs));
        }
    }
    b.title = info_title(&doc);
    Ok(b.finish(Format::Pdf))
}

/// The document information dictionary's /Title, if it has a non-empty one.
fn info_title(doc: &pdf_extract::Document) -> Option<String> {
    let info = doc.trailer.get(b"Info").ok()?;
    let info = match info {
        pdf_extract::Object::Reference(id) => doc.get_dictionary(*id).ok()?,
        pdf_extract::Object::Dictionary(d) => d,
        _ => return None,
    };
    let raw = info.get(b"Title").ok()?.as_str().ok()?;
    let title = if raw.starts_with(&[0xFE, 0xFF]) {
        let units: Vec<u16> = raw[2..]
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        raw.iter().map(|&b| b as char).collect()
    };
    let t = clean::paragraph(&title);
    (!t.is_empty()).then_some(t)
}
