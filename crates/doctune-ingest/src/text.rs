//! Text-like formats: plain text in any common encoding, Markdown, CSV/TSV (each row as
//! "header: value" text), JSON/JSONL (records, not prose).

use crate::document::{Builder, Document};
use crate::{Format, IngestError, Limits};
use std::path::Path;

/// Decodes bytes: a BOM (UTF-8/UTF-16) decides; else valid UTF-8 is UTF-8; else the encoding
/// chardetng guesses (Windows-1252 for Western text). Returns the text and any warning.
pub(crate) fn decode(bytes: &[u8]) -> (String, Vec<String>) {
    if let Some((enc, bom)) = encoding_rs::Encoding::for_bom(bytes) {
        let (s, had_errors) = enc.decode_without_bom_handling(&bytes[bom..]);
        let w = had_errors.then(|| {
            format!(
                "some bytes are not valid {}; they were replaced",
                enc.name()
            )
        });
        return (s.into_owned(), w.into_iter().collect());
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        return (s.to_owned(), Vec::new());
    }
    let mut det = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    det.feed(bytes, true);
    let enc = det.guess(None, chardetng::Utf8Detection::Allow);
    let (s, _, had_errors) = enc.decode(bytes);
    let mut w = vec![format!("not UTF-8; read as {}", enc.name())];
    if had_errors {
        w.push(format!(
            "some bytes are not valid {}; they were replaced",
            enc.name()
        ));
    }
    (s.into_owned(), w)
}

/// Paragraphs are separated by blank lines; lines within one are joined.
pub(crate) fn plain(_path: &Path, bytes: &[u8]) -> Document {
    let (s, w) = decode(bytes);
    let mut b = Builder::with_warnings(w);
    for para in s.split("\n\n").flat_map(|p| p.split("\r\n\r\n")) {
        b.paragraph(para);
    }
    b.finish(Format::Text)
}

/// Markdown as readable text: headings kept as their own paragraphs (and sections), emphasis and
/// link syntax removed, code blocks kept as text, list items one paragraph each.
pub(crate) fn markdown(_path: &Path, bytes: &[u8]) -> Document {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let (s, w) = decode(bytes);
    let mut b = Builder::with_warnings(w);
    let mut current = String::new();
    for ev in Parser::new(&s) {
        match ev {
            Event::Start(Tag::Heading { .. }) => {
                b.paragraph(&std::mem::take(&mut current));
            }
            Event::End(TagEnd::Heading(_)) => {
                b.heading(&std::mem::take(&mut current));
            }
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Item
                | TagEnd::CodeBlock
                | TagEnd::TableRow
                | TagEnd::TableHead,
            ) => {
                b.paragraph(&std::mem::take(&mut current));
            }
            Event::Start(Tag::Item) => b.paragraph(&std::mem::take(&mut current)),
            Event::End(TagEnd::TableCell) => current.push_str(" \t "),
            Event::Text(t) | Event::Code(t) => current.push_str(&t),
            Event::SoftBreak | Event::HardBreak => current.push(' '),
            _ => {}
        }
    }
    b.paragraph(&current);
    b.finish(Format::Markdown)
}

/// CSV/TSV: the first row names the columns; every later row becomes "name: value; …".
pub(crate) fn delimited(
    path: &Path,
    bytes: &[u8],
    delimiter: u8,
    limits: &Limits,
) -> Result<Document, IngestError> {
    let (s, w) = decode(bytes);
    let mut b = Builder::with_warnings(w);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(s.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| IngestError::corrupt(path, e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    for (i, row) in reader.records().enumerate() {
        if i >= limits.max_records {
            return Err(IngestError::limit(
                path,
                format!("more than {} rows", limits.max_records),
            ));
        }
        match row {
            Ok(r) => b.paragraph(&row_text(&headers, r.iter())),
            Err(e) => crate::document::warn(&mut b.warnings, format!("row {}: {e}", i + 2)),
        }
    }
    Ok(b.finish(if delimiter == b'\t' {
        Format::Tsv
    } else {
        Format::Csv
    }))
}

/// "name: value; name: value" for the non-empty cells of a row.
pub(crate) fn row_text<'a>(headers: &[String], cells: impl Iterator<Item = &'a str>) -> String {
    cells
        .enumerate()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(i, v)| match headers.get(i).filter(|h| !h.is_empty()) {
            Some(h) => format!("{h}: {}", v.trim()),
            None => v.trim().to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The error text that ends an array read past its record limit.
const TOO_MANY: &str = "doctune: too many records";

/// A JSON array's elements, kept up to `.0` of them: past it the read stops with [`TOO_MANY`],
/// so the limit is checked as records are built, not after all of them are.
struct Records(usize);

impl<'de> serde::de::Visitor<'de> for Records {
    type Value = Vec<serde_json::Value>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            if out.len() == self.0 {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            out.push(v);
        }
        Ok(out)
    }
}

/// A JSON array (of records) or a single JSON value, read in one pass.
pub(crate) fn json(path: &Path, bytes: &[u8], limits: &Limits) -> Result<Document, IngestError> {
    use serde::de::Deserializer as _;
    let (s, w) = decode(bytes);
    let invalid = |e: serde_json::Error| {
        if e.to_string().starts_with(TOO_MANY) {
            IngestError::limit(path, format!("more than {} records", limits.max_records))
        } else {
            IngestError::corrupt(path, format!("not valid JSON: {e}"))
        }
    };
    let records = if s.trim_start().starts_with('[') {
        let mut de = serde_json::Deserializer::from_str(&s);
        let records = de
            .deserialize_seq(Records(limits.max_records))
            .map_err(invalid)?;
        de.end().map_err(invalid)?;
        records
    } else {
        vec![serde_json::from_str::<serde_json::Value>(&s).map_err(invalid)?]
    };
    let mut doc = Builder::with_warnings(w).finish(Format::Json);
    doc.records = Some(records);
    Ok(doc)
}

/// One JSON value per line; a bad line is skipped and reported with its number.
pub(crate) fn jsonl(path: &Path, bytes: &[u8], limits: &Limits) -> Result<Document, IngestError> {
    let (s, w) = decode(bytes);
    let mut records = Vec::new();
    let mut warnings = w;
    for (i, line) in s.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if records.len() >= limits.max_records {
            return Err(IngestError::limit(
                path,
                format!("more than {} records", limits.max_records),
            ));
        }
        match serde_json::from_str(line) {
            Ok(v) => records.push(v),
            Err(e) => crate::document::warn(
                &mut warnings,
                format!("line {}: not valid JSON ({e}); skipped", i + 1),
            ),
        }
    }
    let mut doc = Builder::with_warnings(warnings).finish(Format::Jsonl);
    doc.records = Some(records);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(decode("héllo".as_bytes()).0, "héllo");
        let (s, w) = decode(b"caf\xe9 cr\xe8me br\xfbl\xe9e et na\xefve fa\xe7ade");
        assert_eq!(s, "café crème brûlée et naïve façade");
        assert!(w[0].starts_with("not UTF-8; read as windows-1252"), "{w:?}");
        let mut u16 = vec![0xFF, 0xFE];
        for u in "Grüße".encode_utf16() {
            u16.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(decode(&u16).0, "Grüße");
        assert_eq!(decode(b"\xEF\xBB\xBFbom").0, "bom");
    }

    #[test]
    fn markdown_keeps_headings_as_text() {
        let d = markdown(Path::new("a.md"), b"# Title\n\nSome *emphasis* and [a link](http://x).\n\n- one\n- two\n\n## Next\n\n```\ncode\n```\n");
        assert_eq!(
            d.text,
            "Title\n\nSome emphasis and a link.\n\none\n\ntwo\n\nNext\n\ncode"
        );
        assert_eq!(d.title.as_deref(), Some("Title"));
        assert_eq!(d.sections.len(), 2);
    }

    #[test]
    fn csv_rows_keep_their_headers() {
        let d = delimited(
            Path::new("a.csv"),
            b"name,colour\nbee,yellow\nant,\n\"x, y\",\"multi\nline\"\n",
            b',',
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            d.text,
            "name: bee; colour: yellow\n\nname: ant\n\nname: x, y; colour: multi line"
        );
    }

    #[test]
    fn jsonl_reports_bad_lines_and_keeps_records() {
        let d = jsonl(
            Path::new("a.jsonl"),
            b"{\"a\":1}\nnot json\n\n{\"a\":2}\n",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(d.records.as_ref().unwrap().len(), 2);
        assert!(
            d.warnings[0].starts_with("line 2: not valid JSON"),
            "{:?}",
            d.warnings
        );
        assert!(d.text.is_empty());
    }
}
