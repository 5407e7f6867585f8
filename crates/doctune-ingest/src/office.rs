//! ZIP-based formats: DOCX, ODT, EPUB, XLSX. Every container is checked before anything is
//! decompressed (declared sizes per entry and in total, and the compression ratio of large
//! entries), and every read is bounded again by what is actually produced, since declared sizes
//! can lie.

use crate::document::{Builder, Document, SectionKind};
use crate::xml::{attr, walk, Node};
use crate::{Format, IngestError, Limits};
use doctune_core::CancelToken;
use std::io::{Cursor, Read};
use std::path::Path;

struct Zip<'a> {
    path: &'a Path,
    archive: zip::ZipArchive<Cursor<&'a [u8]>>,
    limits: &'a Limits,
    read_total: u64,
}

impl<'a> Zip<'a> {
    fn open(path: &'a Path, bytes: &'a [u8], limits: &'a Limits) -> Result<Self, IngestError> {
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
            IngestError::corrupt(path, format!("not a readable ZIP container ({e})"))
        })?;
        let mut declared = 0u64;
        for i in 0..archive.len() {
            let entry = archive
                .by_index_raw(i)
                .map_err(|e| IngestError::corrupt(path, format!("ZIP entry {i}: {e}")))?;
            let (size, packed) = (entry.size(), entry.compressed_size());
            declared = declared.saturating_add(size);
            let bomb = |reason: String| IngestError::ZipBomb {
                path: path.into(),
                reason,
            };
            if size > limits.max_entry_bytes {
                return Err(bomb(format!(
                    "{} expands to {size} bytes, more than the {}-byte limit",
                    entry.name(),
                    limits.max_entry_bytes
                )));
            }
            if size > 1 << 20 && size / packed.max(1) > limits.max_ratio {
                return Err(bomb(format!(
                    "{} expands {}:1, more than the {}:1 limit",
                    entry.name(),
                    size / packed.max(1),
                    limits.max_ratio
                )));
            }
            if declared > limits.max_total_bytes {
                return Err(bomb(format!(
                    "the entries expand to more than the {}-byte limit",
                    limits.max_total_bytes
                )));
            }
        }
        Ok(Self {
            path,
            archive,
            limits,
            read_total: 0,
        })
    }

    /// The decompressed bytes of entry `name`, or `None` if there is none.
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, IngestError> {
        let limit = self.limits.max_entry_bytes;
        let entry = match self.archive.by_name(name) {
            Ok(e) => e,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(IngestError::corrupt(self.path, format!("{name}: {e}"))),
        };
        let mut out = Vec::new();
        entry
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| IngestError::corrupt(self.path, format!("{name}: {e}")))?;
        self.read_total += out.len() as u64;
        if out.len() as u64 > limit || self.read_total > self.limits.max_total_bytes {
            return Err(IngestError::ZipBomb {
                path: self.path.into(),
                reason: format!("{name} expands past the limit (its declared size was false)"),
            });
        }
        Ok(Some(out))
    }

    fn require(&mut self, name: &str) -> Result<Vec<u8>, IngestError> {
        self.read(name)?
            .ok_or_else(|| IngestError::corrupt(self.path, format!("{name} is missing")))
    }
}

/// `dc:title` from a metadata part, if any.
fn dc_title(path: &Path, what: &str, xml: &[u8], limits: &Limits) -> Option<String> {
    let mut in_title = false;
    let mut title = String::new();
    walk(path, what, xml, limits.max_xml_depth, |n| match n {
        Node::Start("title", _) => in_title = true,
        Node::End("title") => in_title = false,
        Node::Text(t) if in_title => title.push_str(&t),
        _ => {}
    })
    .ok()?;
    let t = crate::clean::paragraph(&title);
    (!t.is_empty()).then_some(t)
}

pub(crate) fn docx(path: &Path, bytes: &[u8], limits: &Limits) -> Result<Document, IngestError> {
    let mut zip = Zip::open(path, bytes, limits)?;
    let xml = zip.require("word/document.xml")?;
    let mut b = Builder::default();
    let (mut para, mut in_t, mut style) = (String::new(), false, None::<String>);
    walk(
        path,
        "word/document.xml",
        &xml,
        limits.max_xml_depth,
        |n| match n {
            Node::Start("p", _) => {
                para.clear();
                style = None;
            }
            Node::End("p") => {
                let is_heading = style.as_deref().is_some_and(|s| {
                    let s = s.to_ascii_lowercase();
                    s.starts_with("heading") || s == "title"
                });
                if is_heading {
                    b.heading(&para);
                } else {
                    b.paragraph(&para);
                }
                para.clear();
            }
            Node::Empty("pStyle", e) | Node::Start("pStyle", e) => style = attr(e, "val"),
            Node::Start("t", _) => in_t = true,
            Node::End("t") => in_t = false,
            Node::Text(t) if in_t => para.push_str(&t),
            Node::Empty("tab", _) => para.push('\t'),
            Node::Empty("br" | "cr", _) => para.push('\n'),
            _ => {}
        },
    )?;
    if let Some(core) = zip.read("docProps/core.xml")? {
        if let Some(t) = dc_title(path, "docProps/core.xml", &core, limits) {
            b.title = Some(t);
        }
    }
    Ok(b.finish(Format::Docx))
}

pub(crate) fn odt(path: &Path, bytes: &[u8], limits: &Limits) -> Result<Document, IngestError> {
    let mut zip = Zip::open(path, bytes, limits)?;
    let xml = zip.require("content.xml")?;
    let mut b = Builder::default();
    // Paragraphs can nest (a paragraph inside a note inside a paragraph): keep a stack.
    let mut stack: Vec<(bool, String)> = Vec::new();
    let mut in_body = false;
    walk(
        path,
        "content.xml",
        &xml,
        limits.max_xml_depth,
        |n| match n {
            Node::Start("body", _) => in_body = true,
            Node::End("body") => in_body = false,
            Node::Start(name @ ("p" | "h"), _) if in_body => {
                stack.push((name == "h", String::new()))
            }
            Node::End("p" | "h") if in_body => {
                if let Some((heading, text)) = stack.pop() {
                    if heading {
                        b.heading(&text);
                    } else {
                        b.paragraph(&text);
                    }
                }
            }
            Node::Text(t) => {
                if let Some((_, s)) = stack.last_mut() {
                    s.push_str(&t);
                }
            }
            Node::Empty("s", e) => {
                let n: usize = attr(e, "c")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1)
                    .min(64);
                if let Some((_, s)) = stack.last_mut() {
                    s.push_str(&" ".repeat(n));
                }
            }
            Node::Empty("tab" | "line-break", _) => {
                if let Some((_, s)) = stack.last_mut() {
                    s.push(' ');
                }
            }
            _ => {}
        },
    )?;
    if let Some(meta) = zip.read("meta.xml")? {
        if let Some(t) = dc_title(path, "meta.xml", &meta, limits) {
            b.title = Some(t);
        }
    }
    Ok(b.finish(Format::Odt))
}

/// Resolves `href` against the folder `base` inside the container; `None` if it climbs out.
fn join_inside(base: &str, href: &str) -> Option<String> {
    let href = href.split('#').next().unwrap_or("");
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for p in href.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/").replace("%20", " "))
}

pub(crate) fn epub(
    path: &Path,
    bytes: &[u8],
    limits: &Limits,
    cancel: &CancelToken,
) -> Result<Document, IngestError> {
    let mut zip = Zip::open(path, bytes, limits)?;
    let container = zip.require("META-INF/container.xml")?;
    let mut opf_path = None;
    walk(
        path,
        "META-INF/container.xml",
        &container,
        limits.max_xml_depth,
        |n| {
            if let Node::Empty("rootfile", e) | Node::Start("rootfile", e) = n {
                opf_path = opf_path.take().or_else(|| attr(e, "full-path"));
            }
        },
    )?;
    let opf_path = opf_path
        .ok_or_else(|| IngestError::corrupt(path, "META-INF/container.xml names no rootfile"))?;
    let opf = zip.require(&opf_path)?;
    let base = opf_path
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or_default();
    let mut manifest: Vec<(String, String, String)> = Vec::new(); // id, href, media-type
    let mut spine: Vec<String> = Vec::new();
    walk(path, &opf_path, &opf, limits.max_xml_depth, |n| match n {
        Node::Empty("item", e) | Node::Start("item", e) => {
            if let (Some(id), Some(href)) = (attr(e, "id"), attr(e, "href")) {
                manifest.push((id, href, attr(e, "media-type").unwrap_or_default()));
            }
        }
        Node::Empty("itemref", e) | Node::Start("itemref", e) => {
            if let Some(id) = attr(e, "idref") {
                spine.push(id);
            }
        }
        _ => {}
    })?;
    let mut b = Builder::default();
    let title = dc_title(path, &opf_path, &opf, limits);
    for id in &spine {
        if cancel.is_cancelled() {
            return Err(IngestError::Cancelled);
        }
        let Some((_, href, media)) = manifest.iter().find(|(i, _, _)| i == id) else {
            b.warnings
                .push(format!("the spine names {id}, which the manifest lacks"));
            continue;
        };
        if !media.contains("html") {
            continue;
        }
        let Some(entry) = join_inside(&base, href) else {
            b.warnings
                .push(format!("{href} points outside the book; skipped"));
            continue;
        };
        let Some(chapter) = zip.read(&entry)? else {
            crate::document::warn(&mut b.warnings, format!("{entry} is missing"));
            continue;
        };
        let (s, _) = crate::text::decode(&chapter);
        b.begin(SectionKind::Chapter, entry);
        crate::html::append(&crate::html::parse(path, &s, limits)?, &mut b);
    }
    if title.is_some() {
        b.title = title;
    }
    Ok(b.finish(Format::Epub))
}

/// A workbook, sheet by sheet, its cells streamed in file order (never the sheet's dense range,
/// so two cells a million rows apart cost two cells): the first row with a value names the
/// columns, each later row becomes "header: value; …" of its cells with a value.
pub(crate) fn xlsx(path: &Path, bytes: &[u8], limits: &Limits) -> Result<Document, IngestError> {
    use calamine::{DataType, Reader};
    // The container check runs first: calamine decompresses on its own.
    Zip::open(path, bytes, limits)?;
    let mut book = calamine::Xlsx::new(Cursor::new(bytes))
        .map_err(|e| IngestError::corrupt(path, format!("not a readable workbook ({e})")))?;
    let mut b = Builder::default();
    let (mut rows_total, mut cells_total) = (0usize, 0u64);
    for name in book.sheet_names() {
        let sheet_error =
            |e: calamine::XlsxError| IngestError::corrupt(path, format!("sheet {name}: {e}"));
        let mut cells = book.worksheet_cells_reader(&name).map_err(sheet_error)?;
        b.begin(SectionKind::Sheet, name.clone());
        let mut headers: Option<std::collections::BTreeMap<u32, String>> = None;
        let mut row: Vec<(u32, String)> = Vec::new();
        let mut row_at = None;
        let mut end_row =
            |row: &mut Vec<(u32, String)>, b: &mut Builder| -> Result<(), IngestError> {
                if row.is_empty() {
                    return Ok(());
                }
                let Some(headers) = &headers else {
                    headers = Some(std::mem::take(row).into_iter().collect());
                    return Ok(());
                };
                rows_total += 1;
                if rows_total > limits.max_records {
                    return Err(IngestError::limit(
                        path,
                        format!("more than {} rows", limits.max_records),
                    ));
                }
                b.paragraph(&cells_text(headers, row));
                row.clear();
                Ok(())
            };
        while let Some(cell) = cells.next_cell().map_err(sheet_error)? {
            let value = cell.get_value();
            if value.is_empty() {
                continue;
            }
            cells_total += 1;
            if cells_total > limits.max_cells {
                return Err(IngestError::limit(
                    path,
                    format!("more than {} cells with a value", limits.max_cells),
                ));
            }
            let (r, c) = cell.get_position();
            if row_at != Some(r) {
                end_row(&mut row, &mut b)?;
                row_at = Some(r);
            }
            let text = calamine::Data::from(value.clone()).to_string();
            if !text.trim().is_empty() {
                row.push((c, text));
            }
        }
        end_row(&mut row, &mut b)?;
    }
    Ok(b.finish(Format::Xlsx))
}

/// "header: value; …" of a sparse row, each value under its column's header (or alone).
fn cells_text(headers: &std::collections::BTreeMap<u32, String>, row: &[(u32, String)]) -> String {
    row.iter()
        .map(
            |(c, v)| match headers.get(c).map(|h| h.trim()).filter(|h| !h.is_empty()) {
                Some(h) => format!("{h}: {}", v.trim()),
                None => v.trim().to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::zip_with;
    use std::io::Write;

    #[test]
    fn docx_paragraphs_headings_and_title() {
        let doc = br#"<?xml version="1.0"?><w:document xmlns:w="w"><w:body>
            <w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Spring</w:t></w:r></w:p>
            <w:p><w:r><w:t xml:space="preserve">Open the hive </w:t></w:r><w:r><w:t>on a warm day &amp; look.</w:t></w:r></w:p>
            <w:p><w:r><w:instrText>PAGE</w:instrText><w:t>A</w:t><w:tab/><w:t>B</w:t></w:r></w:p>
            </w:body></w:document>"#;
        let core = br#"<cp:coreProperties xmlns:cp="c" xmlns:dc="d"><dc:title>Bee guide</dc:title></cp:coreProperties>"#;
        let bytes = zip_with(&[("word/document.xml", doc), ("docProps/core.xml", core)]);
        let d = docx(Path::new("a.docx"), &bytes, &Limits::default()).unwrap();
        assert_eq!(
            d.text,
            "Spring\n\nOpen the hive on a warm day & look.\n\nA B"
        );
        assert_eq!(d.title.as_deref(), Some("Bee guide"));
        assert_eq!(d.sections[0].label, "Spring");
    }

    #[test]
    fn billion_laughs_and_deep_nesting_are_refused() {
        let lol = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><w:document><w:body><w:p><w:t>&lol2;</w:t></w:p></w:body></w:document>"#;
        let e = docx(
            Path::new("lol.docx"),
            &zip_with(&[("word/document.xml", lol)]),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("contains a DTD; entity definitions are refused"),
            "{e}"
        );
        let undefined =
            br#"<w:document><w:body><w:p><w:t>&nope;</w:t></w:p></w:body></w:document>"#;
        let e = docx(
            Path::new("u.docx"),
            &zip_with(&[("word/document.xml", undefined)]),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("undefined entity"), "{e}");
        let deep = format!(
            "<w:document>{}{}</w:document>",
            "<a>".repeat(300),
            "</a>".repeat(300)
        );
        let e = docx(
            Path::new("d.docx"),
            &zip_with(&[("word/document.xml", deep.as_bytes())]),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("nests deeper than 256 levels"),
            "{e}"
        );
    }

    #[test]
    fn zip_bombs_are_refused_before_decompression() {
        let mut buf = Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut buf);
            z.start_file(
                "word/document.xml",
                zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated),
            )
            .unwrap();
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..64 {
                z.write_all(&zeros).unwrap(); // 64 MiB of zeros: ~1000:1
            }
            z.finish().unwrap();
        }
        let e = docx(
            Path::new("bomb.docx"),
            &buf.into_inner(),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(matches!(e, IngestError::ZipBomb { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("bomb.docx: refused as a ZIP bomb: word/document.xml expands"),
            "{e}"
        );
    }

    #[test]
    fn odt_and_epub() {
        let content = br#"<office:document-content xmlns:office="o" xmlns:text="t"><office:body><office:text>
            <text:h>Harvest</text:h><text:p>Capped<text:s text:c="2"/>frames<text:tab/>only.</text:p>
            </office:text></office:body></office:document-content>"#;
        let d = odt(
            Path::new("a.odt"),
            &zip_with(&[
                ("mimetype", b"application/vnd.oasis.opendocument.text"),
                ("content.xml", content),
            ]),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(d.text, "Harvest\n\nCapped frames only.");

        let container = br#"<container><rootfiles><rootfile full-path="OEBPS/book.opf"/></rootfiles></container>"#;
        let opf = br#"<package><metadata><dc:title xmlns:dc="d">The Hive</dc:title></metadata><manifest>
            <item id="c1" href="ch1.xhtml" media-type="application/xhtml+xml"/>
            <item id="c2" href="text/ch2.xhtml" media-type="application/xhtml+xml"/>
            <item id="evil" href="../../etc/passwd" media-type="application/xhtml+xml"/>
            </manifest><spine><itemref idref="c2"/><itemref idref="c1"/><itemref idref="evil"/></spine></package>"#;
        let bytes = zip_with(&[
            ("mimetype", b"application/epub+zip"),
            ("META-INF/container.xml", container),
            ("OEBPS/book.opf", opf),
            (
                "OEBPS/ch1.xhtml",
                b"<html><body><h1>One</h1><p>First.</p></body></html>",
            ),
            (
                "OEBPS/text/ch2.xhtml",
                b"<html><body><h1>Two</h1><p>Second.</p></body></html>",
            ),
        ]);
        let d = epub(
            Path::new("b.epub"),
            &bytes,
            &Limits::default(),
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!(d.title.as_deref(), Some("The Hive"));
        assert_eq!(d.text, "Two\n\nSecond.\n\nOne\n\nFirst.", "spine order");
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("points outside the book")),
            "{:?}",
            d.warnings
        );
    }

    #[test]
    fn truncated_containers_are_named() {
        let bytes = zip_with(&[("word/document.xml", b"<w:document/>")]);
        let e = docx(
            Path::new("t.docx"),
            &bytes[..bytes.len() / 2],
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.docx: damaged or truncated: not a readable ZIP container"),
            "{e}"
        );
    }
}
