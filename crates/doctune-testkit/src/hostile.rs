//! Hostile inputs, generated: one small file (or model folder) per class of input that used to
//! take a parser, the template engine or the model loader down — a form XObject that draws
//! itself, forms nested or multiplied past reason, an object stream behind chained filters that
//! inflates to hundreds of MiB, two spreadsheet cells a million rows apart, markup nested a
//! million deep, a million broken JSON Lines rows, JSON of millions of records, a ZIP bomb, a
//! billion-laughs DTD, absurd `config.json` values, and chat templates that never end or double
//! a string until memory runs out.
//!
//! The CLI's hostile-input suite (`crates/doctune-cli/tests/hostile.rs`) runs every one and
//! asserts a clear result; `hostile-inputs DIR` writes them out to try by hand.

use flate2::write::ZlibEncoder;
use lopdf::{dictionary, Dictionary, Document, Object, ObjectId, Stream};
use std::io::{Read, Write};

/// What DocTune must make of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Refused with an error containing this text (and the file's name), exit status 1.
    Refused(&'static str),
    /// Read: the hostile part costs nothing (bounded time and memory), exit status 0.
    Read,
}

/// One hostile document.
#[derive(Debug, Clone)]
pub struct HostileFile {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub expect: Expect,
}

/// Every hostile document, by class.
pub fn documents() -> Vec<HostileFile> {
    let f = |name, bytes, expect| HostileFile {
        name,
        bytes,
        expect,
    };
    vec![
        f(
            "self-drawing-form.pdf",
            self_drawing_form_pdf(),
            Expect::Refused("draws itself"),
        ),
        f(
            "deep-forms.pdf",
            form_chain_pdf(40, 1),
            Expect::Refused("form XObjects nest more than 32 deep"),
        ),
        f(
            "form-fanout.pdf",
            form_chain_pdf(30, 2),
            Expect::Refused("draws form XObjects more than 100000 times"),
        ),
        f(
            "object-stream-bomb.pdf",
            object_stream_bomb_pdf(300 << 20),
            Expect::Refused("(the stream size limit)"),
        ),
        f("far-apart-cells.xlsx", far_apart_cells_xlsx(), Expect::Read),
        f(
            "deep-nesting.html",
            deep_html(1_000_000),
            Expect::Refused("markup nests more than 4096 elements deep"),
        ),
        f("broken-rows.jsonl", b"{\n".repeat(1_000_000), Expect::Read),
        f(
            "many-records.json",
            many_records_json(3_000_000),
            Expect::Refused("more than 1000000 records"),
        ),
        f(
            "zip-bomb.docx",
            zip_bomb_docx(16 << 20),
            Expect::Refused("refused as a ZIP bomb"),
        ),
        f(
            "billion-laughs.docx",
            billion_laughs_docx(),
            Expect::Refused("contains a DTD"),
        ),
    ]
}

/// One hostile model folder: its files, and the text its error must contain.
#[derive(Debug, Clone)]
pub struct HostileModel {
    pub name: &'static str,
    pub files: Vec<(String, Vec<u8>)>,
    /// Refused at import when true; else imported, and refused when it renders a chat prompt.
    pub at_import: bool,
    pub error: &'static str,
}

/// Model folders with an absurd config or a chat template that never ends.
pub fn models() -> Vec<HostileModel> {
    let with_config = |key: &str, value: serde_json::Value| {
        let mut files = crate::hub::tiny_llama(1);
        let (_, cfg) = files.iter_mut().find(|(n, _)| n == "config.json").unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(cfg).unwrap();
        v[key] = value;
        *cfg = serde_json::to_vec(&v).unwrap();
        files
    };
    let with_template = |template: &str| {
        let mut files = crate::hub::tiny_llama(1);
        let (_, cfg) = files
            .iter_mut()
            .find(|(n, _)| n == "tokenizer_config.json")
            .unwrap();
        *cfg = serde_json::to_vec(&serde_json::json!({
            "bos_token": "<s>", "eos_token": "</s>", "chat_template": template,
        }))
        .unwrap();
        files
    };
    vec![
        HostileModel {
            name: "partial-rotary",
            files: with_config("partial_rotary_factor", 1e9.into()),
            at_import: true,
            error: "partial_rotary_factor",
        },
        HostileModel {
            name: "huge-head-dim",
            files: with_config("head_dim", (1u64 << 40).into()),
            at_import: true,
            error: "head_dim",
        },
        HostileModel {
            name: "endless-template",
            files: with_template(
                "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            ),
            at_import: false,
            error: "did not finish within its budget of",
        },
        HostileModel {
            name: "doubling-template",
            files: with_template(
                "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
            ),
            at_import: false,
            error: "did not finish within its budget: it needed more than 1024 MiB of memory",
        },
        HostileModel {
            name: "doubling-macro",
            files: with_template(
                "{% macro d(s, n) %}{% if n > 0 %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}{% endmacro %}{{ d('x', 40) }}",
            ),
            at_import: false,
            error: "did not finish within its budget: it needed more than 1024 MiB of memory",
        },
    ]
}

const FONT_TEXT: &[u8] = b"BT /F1 12 Tf 72 700 Td (Hostile input) Tj ET\n";

/// A one-page PDF: `build` adds its objects and returns the page's XObject resources and the
/// content to put before a line of text.
fn one_page_pdf(build: impl FnOnce(&mut Document) -> (Dictionary, Vec<u8>)) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font = doc.add_object(
        dictionary! {"Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica"},
    );
    let (xobjects, mut content) = build(&mut doc);
    content.extend_from_slice(FONT_TEXT);
    let content_id = doc.add_object(Stream::new(dictionary! {}, content));
    let page = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
        "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
        "Resources" => dictionary! {"Font" => dictionary! {"F1" => font}, "XObject" => xobjects},
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(
            dictionary! {"Type" => "Pages", "Kids" => vec![page.into()], "Count" => 1},
        ),
    );
    let catalog = doc.add_object(dictionary! {"Type" => "Catalog", "Pages" => pages_id});
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    doc.save_to(&mut out).expect("a PDF in memory");
    out
}

/// A form XObject stream with these resources and content.
fn form(resources: Dictionary, content: &[u8]) -> Object {
    Object::Stream(Stream::new(
        dictionary! {
            "Type" => "XObject", "Subtype" => "Form",
            "BBox" => vec![0.into(), 0.into(), 10.into(), 10.into()],
            "Resources" => resources,
        },
        content.to_vec(),
    ))
}

/// A page that draws form X, whose resources name X itself, which it draws.
pub fn self_drawing_form_pdf() -> Vec<u8> {
    one_page_pdf(|doc| {
        let x = doc.new_object_id();
        doc.objects.insert(
            x,
            form(dictionary! {"XObject" => dictionary! {"X" => x}}, b"/X Do"),
        );
        (dictionary! {"X" => x}, b"/X Do\n".to_vec())
    })
}

/// A page that draws a chain of `depth` forms, each drawing the next `fanout` times — depth 40
/// nests past the limit, fan-out 2 at depth 30 draws 2^30 forms.
pub fn form_chain_pdf(depth: usize, fanout: usize) -> Vec<u8> {
    one_page_pdf(|doc| {
        let ids: Vec<ObjectId> = (0..depth).map(|_| doc.new_object_id()).collect();
        let draw_next = b"/N Do ".repeat(fanout);
        for (i, &id) in ids.iter().enumerate() {
            let (resources, content) = match ids.get(i + 1) {
                Some(&next) => (
                    dictionary! {"XObject" => dictionary! {"N" => next}},
                    &draw_next[..],
                ),
                None => (dictionary! {}, &b"0 0 m 1 1 l S"[..]),
            };
            doc.objects.insert(id, form(resources, content));
        }
        (dictionary! {"N" => ids[0]}, b"/N Do\n".to_vec())
    })
}

/// A PDF with an object stream behind two FlateDecode filters that inflates to `size` bytes
/// (a few KiB on disk).
pub fn object_stream_bomb_pdf(size: u64) -> Vec<u8> {
    let mut once = ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::copy(&mut std::io::repeat(b' ').take(size), &mut once).expect("in memory");
    let mut twice = ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    twice
        .write_all(&once.finish().expect("in memory"))
        .expect("in memory");
    let bomb = twice.finish().expect("in memory");
    // Written by hand: lopdf's writer drops object streams it did not make.
    let text = FONT_TEXT;
    let mut objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_vec(),
        [format!("<< /Length {} >>\nstream\n", text.len()).as_bytes(), text, b"\nendstream"].concat(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
    ];
    objects.push(
        [
            format!(
                "<< /Type /ObjStm /N 1 /First 4 /Filter [/FlateDecode /FlateDecode] /Length {} >>\nstream\n",
                bomb.len()
            )
            .as_bytes(),
            &bomb,
            b"\nendstream",
        ]
        .concat(),
    );
    let mut pdf = b"%PDF-1.5\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        pdf.extend_from_slice(body);
        pdf.extend_from_slice(b"\nendobj\n");
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        pdf.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

/// A ZIP of these entries (deflated).
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        z.start_file(*name, zip::write::SimpleFileOptions::default())
            .expect("in memory");
        z.write_all(data).expect("in memory");
    }
    z.finish().expect("in memory").into_inner()
}

/// A workbook whose one sheet has a cell at A1 and one at XFD1048576 (its dense range would be
/// 17 billion cells).
pub fn far_apart_cells_xlsx() -> Vec<u8> {
    const MAIN: &str = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
    const RELS: &str = "http://schemas.openxmlformats.org/package/2006/relationships";
    const DOC: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    let types = r#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#;
    let root = format!(
        r#"<?xml version="1.0"?><Relationships xmlns="{RELS}"><Relationship Id="rId1" Type="{DOC}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#
    );
    let workbook = format!(
        r#"<?xml version="1.0"?><workbook xmlns="{MAIN}" xmlns:r="{DOC}"><sheets><sheet name="Far" sheetId="1" r:id="rId1"/></sheets></workbook>"#
    );
    let wb_rels = format!(
        r#"<?xml version="1.0"?><Relationships xmlns="{RELS}"><Relationship Id="rId1" Type="{DOC}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#
    );
    let sheet = format!(
        r#"<?xml version="1.0"?><worksheet xmlns="{MAIN}"><dimension ref="A1:XFD1048576"/><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>Name</t></is></c></row><row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>far away</t></is></c></row></sheetData></worksheet>"#
    );
    zip_of(&[
        ("[Content_Types].xml", types.as_bytes()),
        ("_rels/.rels", root.as_bytes()),
        ("xl/workbook.xml", workbook.as_bytes()),
        ("xl/_rels/workbook.xml.rels", wb_rels.as_bytes()),
        ("xl/worksheets/sheet1.xml", sheet.as_bytes()),
    ])
}

/// HTML with `depth` nested `<div>`s around a line of text.
pub fn deep_html(depth: usize) -> Vec<u8> {
    let mut s = b"<!doctype html><html><body>".to_vec();
    s.extend(b"<div>".repeat(depth));
    s.extend_from_slice(b"<p>The bottom of the well.</p>");
    s
}

/// A JSON array of `n` empty objects.
pub fn many_records_json(n: usize) -> Vec<u8> {
    let mut s = b"[".to_vec();
    s.extend(b"{},".repeat(n.saturating_sub(1)));
    s.extend_from_slice(b"{}]");
    s
}

/// A DOCX whose document part is `size` spaces (deflated about a thousand to one).
pub fn zip_bomb_docx(size: usize) -> Vec<u8> {
    let mut body = b"<w:document xmlns:w=\"w\"><w:body><w:p><w:r><w:t>".to_vec();
    body.resize(body.len() + size, b' ');
    body.extend_from_slice(b"</w:t></w:r></w:p></w:body></w:document>");
    zip_of(&[("word/document.xml", &body)])
}

/// A DOCX whose document part defines entities ten levels deep (a billion "lol"s if expanded).
pub fn billion_laughs_docx() -> Vec<u8> {
    let mut dtd = String::from(r#"<!ENTITY lol0 "lol">"#);
    for i in 1..10 {
        let prev = format!("&lol{};", i - 1).repeat(10);
        dtd.push_str(&format!(r#"<!ENTITY lol{i} "{prev}">"#));
    }
    let doc = format!(
        r#"<?xml version="1.0"?><!DOCTYPE lolz [{dtd}]><w:document xmlns:w="w"><w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>"#
    );
    zip_of(&[("word/document.xml", doc.as_bytes())])
}
