//! PDF text layer, page by page (pdf-extract over lopdf): the page limit is checked before any
//! page is read, the cancel token between pages. Each page's lines are un-ligatured; lines that
//! repeat at the top or bottom of most pages (running headers, footers, page numbers) are
//! removed; a word hyphenated at a line end is joined. A page with no text gets the warning
//! "page N has no text layer (scanned?)". An encrypted PDF that opens without a password is read;
//! one that needs a password is refused.
//!
//! Two limits are checked before pdf-extract sees the file: every stream's decoded size
//! (`max_stream_bytes`, counted while decoding in lopdf's load filter, so an object stream behind
//! chained filters cannot inflate to gigabytes), and per page the form XObjects it draws
//! (`max_form_depth`, `max_form_draws`; a form that draws itself is refused), because pdf-extract
//! follows `Do` recursively with no guard.

use crate::clean;
use crate::document::{Builder, Document, SectionKind};
use crate::{Format, IngestError, Limits};
use doctune_core::{CancelToken, JobEvent, ProgressSink};
use pdf_extract::{Dictionary, Object, ObjectId, Stream};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

pub(crate) fn extract(
    path: &Path,
    bytes: &[u8],
    limits: &Limits,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Document, IngestError> {
    let mut doc = load(path, bytes, limits)?;
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
    let mut scan = FormScan {
        doc: &doc,
        limits,
        memo: HashMap::new(),
        chain: Vec::new(),
    };
    for (&num, &id) in &pages {
        scan.page(id)
            .map_err(|Refused(why)| IngestError::limit(path, format!("page {num}: {why}")))?;
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

thread_local! {
    /// The stream-size limit for the load filter on this thread (a `fn` cannot capture it), and
    /// the first stream found over it. lopdf runs the filter on the loading thread (no rayon).
    static STREAM_LIMIT: Cell<u64> = const { Cell::new(u64::MAX) };
    static OVERSIZED: Cell<Option<ObjectId>> = const { Cell::new(None) };
}

/// Loads the PDF with every stream's decoded size checked against `max_stream_bytes`.
fn load(path: &Path, bytes: &[u8], limits: &Limits) -> Result<pdf_extract::Document, IngestError> {
    STREAM_LIMIT.set(limits.max_stream_bytes);
    OVERSIZED.set(None);
    let options = pdf_extract::LoadOptions {
        filter: Some(stream_size_filter),
        ..Default::default()
    };
    let loaded = pdf_extract::Document::load_mem_with_options(bytes, options);
    if let Some((num, gen)) = OVERSIZED.take() {
        return Err(IngestError::limit(
            path,
            format!(
                "stream {num} {gen} R decodes to more than {} bytes (the stream size limit)",
                limits.max_stream_bytes
            ),
        ));
    }
    loaded.map_err(|e| IngestError::corrupt(path, format!("not a readable PDF ({e})")))
}

/// lopdf's load filter: drops a stream whose decoded size is over the limit and remembers it.
/// lopdf ignores what the filter returns for top-level objects (streams are always top-level)
/// and keeps it for the objects of an object stream (never streams), so only those are cloned.
fn stream_size_filter(id: ObjectId, object: &mut Object) -> Option<(ObjectId, Object)> {
    let Object::Stream(stream) = object else {
        return Some((id, object.clone()));
    };
    if decoded_len(stream, STREAM_LIMIT.get()) > STREAM_LIMIT.get() {
        if OVERSIZED.get().is_none() {
            OVERSIZED.set(Some(id));
        }
        return None;
    }
    Some((id, Object::Null))
}

/// The size of `stream` after its filters, counted up to `limit + 1`: FlateDecode stages are
/// inflated into a counter (the last) or a buffer capped at `limit + 1` (the others); another
/// filter is decoded by lopdf from that capped input; one lopdf cannot decode ends the chain
/// (pdf-extract never decodes those either).
fn decoded_len(stream: &Stream, limit: u64) -> u64 {
    let Ok(filters) = stream.filters() else {
        return stream.content.len() as u64;
    };
    // Most streams cannot reach the limit at all: the most each filter can expand (deflate
    // 1032:1, LZW 4096 bytes per 9-bit code, ASCII85 4 bytes per `z`, run-length 128 per 2
    // bytes) times the raw size is a bound, and below the limit nothing needs decoding here.
    let bound = filters.iter().fold(stream.content.len() as u64, |n, f| {
        let ratio = match *f {
            b"FlateDecode" => 1032,
            b"LZWDecode" => 3641,
            b"ASCII85Decode" => 4,
            b"RunLengthDecode" => 64,
            b"ASCIIHexDecode" => 1,
            _ => u64::MAX,
        };
        n.saturating_mul(ratio)
    });
    if bound <= limit {
        return bound;
    }
    let cap = limit.saturating_add(1);
    let mut data = std::borrow::Cow::Borrowed(stream.content.as_slice());
    for (i, filter) in filters.iter().enumerate() {
        let last = i + 1 == filters.len();
        if *filter == b"FlateDecode" {
            if last {
                return inflate(&data, &mut std::io::sink(), cap);
            }
            let mut out = Vec::new();
            inflate(&data, &mut out, cap);
            data = out.into();
        } else {
            let mut dict = Dictionary::new();
            dict.set("Filter", Object::Name(filter.to_vec()));
            if let Ok(p) = stream.dict.get(b"DecodeParms") {
                dict.set("DecodeParms", p.clone());
            }
            match Stream::new(dict, data.to_vec()).decompressed_content() {
                Ok(out) => data = out.into(),
                Err(_) => return data.len() as u64,
            }
        }
        if data.len() as u64 > limit {
            return data.len() as u64;
        }
    }
    data.len() as u64
}

/// Inflates zlib `input` (or, as lopdf falls back to, raw deflate after its two header bytes)
/// into `out`, at most `cap` bytes; returns how many were written.
fn inflate(input: &[u8], out: &mut impl std::io::Write, cap: u64) -> u64 {
    let n = std::io::copy(&mut flate2::read::ZlibDecoder::new(input).take(cap), out).unwrap_or(0);
    if n > 0 || input.len() <= 2 {
        return n;
    }
    std::io::copy(
        &mut flate2::read::DeflateDecoder::new(&input[2..]).take(cap),
        out,
    )
    .unwrap_or(0)
}

/// Why a page's forms are refused (the caller adds the file and the page).
struct Refused(String);

/// The form XObjects a page draws, followed as pdf-extract follows them: a `Do` names an entry
/// of the XObject resources in effect; a form's own /Resources, else its caller's, apply inside.
struct FormScan<'a> {
    doc: &'a pdf_extract::Document,
    limits: &'a Limits,
    /// Forms drawn by one use of (form, resources in effect), itself included.
    memo: HashMap<(ObjectId, usize), u64>,
    /// The forms being followed, outermost first.
    chain: Vec<ObjectId>,
}

impl<'a> FormScan<'a> {
    fn page(&mut self, page: ObjectId) -> Result<(), Refused> {
        let Some(resources) = self.page_resources(page) else {
            return Ok(());
        };
        if !self.has_forms(resources) {
            return Ok(());
        }
        let content = self.doc.get_page_content(page).unwrap_or_default();
        self.draws(&content, resources, 0).map(|_| ())
    }

    /// The page's /Resources, inherited from the page tree as pdf-extract looks them up.
    fn page_resources(&self, page: ObjectId) -> Option<&'a Dictionary> {
        let mut node = self.doc.get_dictionary(page).ok()?;
        for _ in 0..64 {
            if let Ok(r) = node.get(b"Resources") {
                return self.dict(r);
            }
            node = self.dict(node.get(b"Parent").ok()?)?;
        }
        None
    }

    fn dict(&self, o: &'a Object) -> Option<&'a Dictionary> {
        match o {
            Object::Reference(id) => self.doc.get_dictionary(*id).ok(),
            Object::Dictionary(d) => Some(d),
            _ => None,
        }
    }

    fn has_forms(&self, resources: &'a Dictionary) -> bool {
        let Some(xobjects) = resources.get(b"XObject").ok().and_then(|x| self.dict(x)) else {
            return false;
        };
        xobjects.iter().any(|(_, v)| {
            v.as_reference()
                .ok()
                .and_then(|id| self.doc.get_object(id).ok())
                .and_then(|o| o.as_stream().ok())
                .is_some_and(|s| {
                    s.dict.get(b"Subtype").and_then(Object::as_name).ok() != Some(b"Image")
                })
        })
    }

    /// Forms drawn by `content` under `resources`, nested `depth` forms deep.
    fn draws(
        &mut self,
        content: &[u8],
        resources: &'a Dictionary,
        depth: u32,
    ) -> Result<u64, Refused> {
        let Ok(content) = pdf_extract::content::Content::decode(content) else {
            return Ok(0);
        };
        let Some(xobjects) = resources.get(b"XObject").ok().and_then(|x| self.dict(x)) else {
            return Ok(0);
        };
        let mut total = 0u64;
        for op in content.operations.iter().filter(|op| op.operator == "Do") {
            let Some(name) = op.operands.first().and_then(|o| o.as_name().ok()) else {
                continue;
            };
            let Ok(&Object::Reference(id)) = xobjects.get(name) else {
                continue;
            };
            let Ok(form) = self.doc.get_object(id).and_then(Object::as_stream) else {
                continue;
            };
            if form.dict.get(b"Subtype").and_then(Object::as_name).ok() == Some(b"Image") {
                continue;
            }
            if self.chain.contains(&id) {
                return Err(Refused(format!(
                    "form XObject {} {} R draws itself",
                    id.0, id.1
                )));
            }
            if depth >= self.limits.max_form_depth {
                return Err(Refused(format!(
                    "form XObjects nest more than {} deep",
                    self.limits.max_form_depth
                )));
            }
            let inner = form
                .dict
                .get(b"Resources")
                .ok()
                .and_then(|r| self.dict(r))
                .unwrap_or(resources);
            let key = (id, std::ptr::from_ref(inner) as usize);
            let n = match self.memo.get(&key) {
                Some(&n) => n,
                None => {
                    let body = form
                        .decompressed_content()
                        .unwrap_or_else(|_| form.content.clone());
                    self.chain.push(id);
                    let n = self.draws(&body, inner, depth + 1)?.saturating_add(1);
                    self.chain.pop();
                    self.memo.insert(key, n);
                    n
                }
            };
            total = total.saturating_add(n);
            if total > self.limits.max_form_draws {
                return Err(Refused(format!(
                    "draws form XObjects more than {} times",
                    self.limits.max_form_draws
                )));
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn deflated(n: usize) -> Stream {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![b' '; n]).unwrap();
        let mut dict = Dictionary::new();
        dict.set("Filter", Object::Name(b"FlateDecode".to_vec()));
        Stream::new(dict, z.finish().unwrap())
    }

    #[test]
    fn stream_sizes_are_bounded_without_decoding_when_they_cannot_reach_the_limit() {
        let limit = 1 << 20;
        // 100 KB of spaces deflate to about a hundred bytes: 1032 × that is under the limit.
        let small = deflated(100_000);
        assert!(decoded_len(&small, limit) <= limit);
        // 4 MiB deflate to about 4 KB: the bound is over the limit, so it is counted.
        let big = deflated(4 << 20);
        assert_eq!(decoded_len(&big, limit), limit + 1);
        let mut unfiltered = Stream::new(Dictionary::new(), vec![0; 10]);
        unfiltered.dict.remove(b"Filter");
        assert_eq!(decoded_len(&unfiltered, limit), 10);
    }
}
