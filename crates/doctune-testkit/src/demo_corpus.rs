//! The demo corpus's PDF and DOCX, made from its Markdown pages (`crates/doctune-api/demo/*.md`)
//! byte for byte the same on every run: no dates, no random ids, ZIP entries stored with the
//! DOS epoch. `cargo run -p doctune-testkit --bin make-demo-corpus` writes them beside the
//! pages; a test of `doctune-api` checks that the committed files are what this makes.
//!
//! The Markdown read is the subset the pages use: `#`/`##` headings and paragraphs.

use lopdf::content::{Content, Operation};
use lopdf::{dictionary, Document, Object, Stream};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The folder of the demo corpus.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../doctune-api/demo")
}

/// A block of a page.
enum Block {
    Heading(u8, String),
    Paragraph(String),
}

fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    for chunk in md.split("\n\n") {
        let text = chunk.trim();
        if text.is_empty() {
            continue;
        }
        if let Some(h) = text.strip_prefix("## ") {
            out.push(Block::Heading(2, h.trim().to_string()));
        } else if let Some(h) = text.strip_prefix("# ") {
            out.push(Block::Heading(1, h.trim().to_string()));
        } else {
            out.push(Block::Paragraph(
                text.split_whitespace().collect::<Vec<_>>().join(" "),
            ));
        }
    }
    out
}

/// The Markdown pages, in name order.
pub fn pages(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    names.sort();
    names.iter().map(std::fs::read_to_string).collect()
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The guide as a PDF: Letter pages, Helvetica, each Markdown page starting a new page.
pub fn pdf(pages: &[String]) -> Vec<u8> {
    const TOP: i64 = 740;
    const BOTTOM: i64 = 72;
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let regular = doc.add_object(
        dictionary! {"Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica", "Encoding" => "WinAnsiEncoding"},
    );
    let bold = doc.add_object(
        dictionary! {"Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica-Bold", "Encoding" => "WinAnsiEncoding"},
    );
    let resources =
        doc.add_object(dictionary! {"Font" => dictionary! {"F1" => regular, "F2" => bold}});
    // Each PDF page: lines of (font, size, text) top to bottom.
    let mut sheets: Vec<Vec<(&str, i64, String, i64)>> = Vec::new();
    for page in pages {
        let mut sheet = Vec::new();
        let mut y = TOP;
        for block in blocks(page) {
            let (font, size, lead, width, text, gap) = match block {
                Block::Heading(1, t) => ("F2", 18, 24, 60, t, 12),
                Block::Heading(_, t) => ("F2", 13, 18, 80, t, 6),
                Block::Paragraph(t) => ("F1", 11, 15, 95, t, 10),
            };
            for line in wrap(&text, width) {
                if y - lead < BOTTOM {
                    sheets.push(std::mem::take(&mut sheet));
                    y = TOP;
                }
                y -= lead;
                sheet.push((font, size, line, y));
            }
            y -= gap;
        }
        sheets.push(sheet);
    }
    let total = sheets.len();
    let mut kids = Vec::new();
    for (n, sheet) in sheets.into_iter().enumerate() {
        let mut ops = Vec::new();
        for (font, size, text, y) in sheet {
            ops.extend([
                Operation::new("BT", vec![]),
                Operation::new("Tf", vec![font.into(), size.into()]),
                Operation::new("Td", vec![72.into(), y.into()]),
                Operation::new("Tj", vec![Object::string_literal(text)]),
                Operation::new("ET", vec![]),
            ]);
        }
        // The page number, which extraction removes as a page furniture line.
        ops.extend([
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 9.into()]),
            Operation::new("Td", vec![300.into(), 40.into()]),
            Operation::new(
                "Tj",
                vec![Object::string_literal(format!("{} / {total}", n + 1))],
            ),
            Operation::new("ET", vec![]),
        ]);
        let content = Content { operations: ops }
            .encode()
            .expect("content streams of literal strings encode");
        let content_id = doc.add_object(Stream::new(dictionary! {}, content));
        let page_id = doc.add_object(
            dictionary! {"Type" => "Page", "Parent" => pages_id, "Contents" => content_id},
        );
        kids.push(page_id.into());
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {"Type" => "Pages", "Kids" => kids, "Count" => count, "Resources" => resources, "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()]}),
    );
    let catalog = doc.add_object(dictionary! {"Type" => "Catalog", "Pages" => pages_id});
    doc.trailer.set("Root", catalog);
    let info =
        doc.add_object(dictionary! {"Title" => Object::string_literal("DocTune user guide")});
    doc.trailer.set("Info", info);
    let mut out = Vec::new();
    doc.save_to(&mut out).expect("writing to memory");
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The guide as a DOCX: headings in Word's Heading 1/2 styles, a page break between pages.
pub fn docx(pages: &[String]) -> Vec<u8> {
    let mut body = String::new();
    for (i, page) in pages.iter().enumerate() {
        if i > 0 {
            body.push_str(r#"<w:p><w:r><w:br w:type="page"/></w:r></w:p>"#);
        }
        for block in blocks(page) {
            let (style, text) = match block {
                Block::Heading(1, t) => (Some("Heading1"), t),
                Block::Heading(_, t) => (Some("Heading2"), t),
                Block::Paragraph(t) => (None, t),
            };
            body.push_str("<w:p>");
            if let Some(s) = style {
                body.push_str(&format!(r#"<w:pPr><w:pStyle w:val="{s}"/></w:pPr>"#));
            }
            body.push_str(&format!(
                r#"<w:r><w:t xml:space="preserve">{}</w:t></w:r></w:p>"#,
                xml_escape(&text)
            ));
        }
    }
    let document = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>"#
    );
    let styles = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:styles xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="heading 1"/><w:rPr><w:b/><w:sz w:val="36"/></w:rPr></w:style><w:style w:type="paragraph" w:styleId="Heading2"><w:name w:val="heading 2"/><w:rPr><w:b/><w:sz w:val="26"/></w:rPr></w:style></w:styles>"#;
    let content_types = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/><Override PartName="/word/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.styles+xml"/></Types>"#;
    let rels = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>"#;
    let doc_rels = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/></Relationships>"#;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default());
    for (name, data) in [
        ("[Content_Types].xml", content_types),
        ("_rels/.rels", rels),
        ("word/_rels/document.xml.rels", doc_rels),
        ("word/styles.xml", styles),
        ("word/document.xml", document.as_str()),
    ] {
        zip.start_file(name, opts).expect("writing to memory");
        zip.write_all(data.as_bytes()).expect("writing to memory");
    }
    zip.finish().expect("writing to memory").into_inner()
}

/// The file names the generated documents have beside the pages.
pub const PDF_NAME: &str = "doctune-guide.pdf";
pub const DOCX_NAME: &str = "doctune-guide.docx";
