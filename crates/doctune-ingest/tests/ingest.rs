//! Extraction end to end on generated fixtures, and the adversarial set: hostile input ends as a
//! specific error naming the file, never a panic or a hang.

use doctune_core::{CancelToken, NullSink};
use doctune_ingest::{extract, Format, IngestError, Limits, SectionKind};
use lopdf::content::{Content, Operation};
use lopdf::{dictionary, Document, Object, Stream};
use std::path::{Path, PathBuf};

/// A PDF whose pages hold these lines (Helvetica, top to bottom), with an /Info /Title.
fn pdf(pages: &[Vec<&str>], title: Option<&str>) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(
        dictionary! {"Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica"},
    );
    let resources_id = doc.add_object(dictionary! {"Font" => dictionary! {"F1" => font_id}});
    let mut kids = Vec::new();
    for lines in pages {
        let mut ops = vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 11.into()]),
            Operation::new("Td", vec![72.into(), 760.into()]),
        ];
        for line in lines {
            ops.push(Operation::new("Tj", vec![Object::string_literal(*line)]));
            ops.push(Operation::new("Td", vec![0.into(), (-16).into()]));
        }
        ops.push(Operation::new("ET", vec![]));
        let content = Content { operations: ops };
        let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
        let page_id = doc.add_object(
            dictionary! {"Type" => "Page", "Parent" => pages_id, "Contents" => content_id},
        );
        kids.push(page_id.into());
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {"Type" => "Pages", "Kids" => kids, "Count" => count, "Resources" => resources_id, "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()]}),
    );
    let catalog_id = doc.add_object(dictionary! {"Type" => "Catalog", "Pages" => pages_id});
    doc.trailer.set("Root", catalog_id);
    if let Some(t) = title {
        let info = doc.add_object(dictionary! {"Title" => Object::string_literal(t)});
        doc.trailer.set("Info", info);
    }
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn run(p: &Path) -> Result<doctune_ingest::Document, IngestError> {
    extract(p, &Limits::default(), &NullSink, &CancelToken::new())
}

#[test]
fn pdf_pages_headers_hyphens_ligatures_and_scanned_pages() {
    let d = tempfile::tempdir().unwrap();
    let body = [
        vec![
            "Bee Journal",
            "Hives need an en-",
            "trance that faces away from paths.",
            "",
            "Second para\u{0}graph here.",
            "Page 1",
        ],
        vec![
            "Bee Journal",
            "Queen cells mean the colony will swarm soon.",
            "Page 2",
        ],
        vec![
            "Bee Journal",
            "Leave fifteen kilos of honey for winter.",
            "Page 3",
        ],
    ];
    let mut pages: Vec<Vec<&str>> = body.to_vec();
    pages.push(vec![]); // a page with no text layer
    let p = write(
        d.path(),
        "journal.pdf",
        &pdf(&pages, Some("The Bee Journal")),
    );
    let doc = run(&p).unwrap();
    assert_eq!(doc.format, Format::Pdf);
    assert_eq!(doc.pages, 4);
    assert_eq!(doc.title.as_deref(), Some("The Bee Journal"));
    assert!(
        !doc.text.contains("Bee Journal"),
        "running header kept: {}",
        doc.text
    );
    assert!(
        !doc.text.contains("Page 2"),
        "page number kept: {}",
        doc.text
    );
    assert!(
        doc.text
            .contains("Hives need an entrance that faces away from paths."),
        "{}",
        doc.text
    );
    assert!(doc
        .text
        .contains("Queen cells mean the colony will swarm soon."));
    assert_eq!(doc.warnings, ["page 4 has no text layer (scanned?)"]);
    let page_sections: Vec<_> = doc
        .sections
        .iter()
        .filter(|s| s.kind == SectionKind::Page)
        .collect();
    assert_eq!(page_sections.len(), 4);
    let chars: Vec<char> = doc.text.chars().collect();
    let p2: String = chars[page_sections[1].start..page_sections[1].end]
        .iter()
        .collect();
    assert_eq!(p2, "Queen cells mean the colony will swarm soon.");
    assert_eq!(doc.sha256.len(), 64);
}

#[test]
fn encrypted_truncated_and_cyclic_pdfs_fail_clearly() {
    let d = tempfile::tempdir().unwrap();
    // Encrypted: an /Encrypt dictionary the empty password cannot open.
    let mut doc = Document::load_mem(&pdf(&[vec!["secret"]], None)).unwrap();
    let enc = doc.add_object(dictionary! {"Filter" => "Standard", "V" => 2, "R" => 3, "Length" => 128, "O" => Object::string_literal(vec![1u8; 32]), "U" => Object::string_literal(vec![2u8; 32]), "P" => -4});
    doc.trailer.set("Encrypt", enc);
    doc.trailer.set(
        "ID",
        vec![
            Object::string_literal(vec![3u8; 16]),
            Object::string_literal(vec![3u8; 16]),
        ],
    );
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).unwrap();
    let p = write(d.path(), "locked.pdf", &bytes);
    let e = run(&p).unwrap_err();
    assert!(matches!(e, IngestError::Encrypted { .. }), "{e}");
    assert!(e.to_string().contains("locked.pdf: the PDF is encrypted"));

    let whole = pdf(&[vec!["text"]], None);
    let p = write(d.path(), "cut.pdf", &whole[..40]);
    let e = run(&p).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}: damaged or truncated", p.display())),
        "{e}"
    );

    // A page tree whose Kids contain the Pages node itself.
    let mut doc = Document::load_mem(&whole).unwrap();
    let pages_id = doc
        .catalog()
        .unwrap()
        .get(b"Pages")
        .unwrap()
        .as_reference()
        .unwrap();
    let pages = doc.get_object_mut(pages_id).unwrap().as_dict_mut().unwrap();
    pages.set("Kids", vec![pages_id.into()]);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).unwrap();
    let p = write(d.path(), "cycle.pdf", &bytes);
    match run(&p) {
        Ok(doc) => assert!(doc.text.is_empty()),
        Err(e) => assert!(e.to_string().contains("cycle.pdf"), "{e}"),
    }
}

#[test]
fn adversarial_plain_files() {
    let d = tempfile::tempdir().unwrap();
    let e = run(&write(d.path(), "empty.txt", b"")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: the file is empty",
            d.path().join("empty.txt").display()
        )
    );

    let doc = run(&write(
        d.path(),
        "latin.txt",
        b"Honig f\xfcr den Winter.\n\nZweiter Absatz.",
    ))
    .unwrap();
    assert_eq!(doc.text, "Honig für den Winter.\n\nZweiter Absatz.");
    assert!(doc.warnings[0].contains("not UTF-8"), "{:?}", doc.warnings);

    let doc = run(&write(
        d.path(),
        "bad.txt",
        b"valid \xff\xfe\xfd then text and more plain words here",
    ))
    .unwrap();
    assert!(doc.text.starts_with("valid"), "{}", doc.text);

    let e = run(&write(
        d.path(),
        "elf.bin",
        b"\x7fELF\x02\x01\x01\x00\x00\x00\x00",
    ))
    .unwrap_err();
    assert!(matches!(e, IngestError::Unsupported { .. }), "{e}");

    // 50 MB on one line.
    let big = vec![b'a'; 50 << 20];
    let doc = run(&write(d.path(), "line.txt", &big)).unwrap();
    assert_eq!(doc.text.len(), 50 << 20);

    #[cfg(unix)]
    {
        let fifo = d.path().join("pipe.txt");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let e = run(&fifo).unwrap_err();
        assert!(matches!(e, IngestError::NotRegularFile { .. }), "{e}");
    }

    let small = Limits {
        max_file_bytes: 10,
        ..Limits::default()
    };
    let e = extract(
        &d.path().join("latin.txt"),
        &small,
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap_err();
    assert!(matches!(e, IngestError::TooLarge { .. }), "{e}");
}

#[test]
fn time_limit_and_cancel() {
    let d = tempfile::tempdir().unwrap();
    let many: Vec<Vec<&str>> = (0..300)
        .map(|_| vec!["a line of text on a page"; 40])
        .collect();
    let p = write(d.path(), "long.pdf", &pdf(&many, None));
    let quick = Limits {
        timeout: std::time::Duration::from_millis(1),
        ..Limits::default()
    };
    let e = extract(&p, &quick, &NullSink, &CancelToken::new()).unwrap_err();
    assert!(matches!(e, IngestError::Timeout { .. }), "{e}");
    let cancel = CancelToken::new();
    cancel.cancel();
    assert!(matches!(
        extract(&p, &Limits::default(), &NullSink, &cancel),
        Err(IngestError::Cancelled)
    ));
}

#[test]
fn formats_by_content_with_mismatch_warnings() {
    let d = tempfile::tempdir().unwrap();
    let doc = run(&write(
        d.path(),
        "page.txt",
        b"<!doctype html><title>T</title><p>Hello</p>",
    ))
    .unwrap();
    assert_eq!(doc.format, Format::Html);
    assert_eq!(
        doc.warnings[0],
        "the extension says .txt but the content is HTML"
    );
    let doc = run(&write(d.path(), "rows.tsv", b"a\tb\n1\t2\n")).unwrap();
    assert_eq!(doc.text, "a: 1; b: 2");
    let doc = run(&write(
        d.path(),
        "data.jsonl",
        b"{\"q\":\"x\"}\n{\"q\":\"y\"}\n",
    ))
    .unwrap();
    assert_eq!(doc.records.unwrap().len(), 2);
    let doc = run(&write(
        d.path(),
        "note.rtf",
        br"{\rtf1\ansi Hello \b world\b0.\par}",
    ))
    .unwrap();
    assert_eq!(doc.text, "Hello world.");
}
