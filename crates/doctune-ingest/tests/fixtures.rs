//! Documents made the way users make them: Markdown sources converted by LibreOffice headless into
//! DOCX, ODT, PDF, EPUB and RTF (tests/fixtures/make.sh; outputs committed). Every paragraph of
//! the source must come out of every format (whitespace normalised), and the title must survive
//! where the format carries one.

use doctune_core::{CancelToken, NullSink};
use doctune_ingest::{extract, Limits};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(crate_dir()).join("tests/fixtures")
}

fn norm(s: &str) -> String {
    doctune_ingest::clean::paragraph(s)
}

#[test]
fn every_source_paragraph_survives_every_format() {
    let mut checked = 0;
    for source in ["apiary", "harvest"] {
        let md = extract(
            &fixtures().join(format!("src/{source}.md")),
            &Limits::default(),
            &NullSink,
            &CancelToken::new(),
        )
        .unwrap();
        let expected: Vec<&str> = md.text.split("\n\n").collect();
        assert!(expected.len() >= 8, "{expected:?}");
        for fmt in ["docx", "odt", "pdf", "epub", "rtf"] {
            let path = fixtures().join(format!("out/{source}.{fmt}"));
            let doc = extract(&path, &Limits::default(), &NullSink, &CancelToken::new())
                .unwrap_or_else(|e| panic!("{e}"));
            let text = norm(&doc.text);
            let missing: Vec<&&str> = expected
                .iter()
                .filter(|p| !text.contains(&norm(p)))
                .collect();
            assert!(
                missing.is_empty(),
                "{source}.{fmt} lost {missing:?}\n--- got ---\n{}",
                doc.text
            );
            if fmt != "rtf" {
                assert_eq!(
                    doc.title.as_deref(),
                    Some(expected[0]),
                    "{source}.{fmt} title"
                );
            }
            if fmt == "pdf" {
                assert!(doc.pages >= 1);
                assert!(doc.warnings.is_empty(), "{:?}", doc.warnings);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 10);
}

#[test]
fn a_calc_workbook_keeps_rows_with_their_headers() {
    let doc = extract(
        &fixtures().join("out/inventory.xlsx"),
        &Limits::default(),
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(doc.format, doctune_ingest::Format::Xlsx);
    assert_eq!(
        doc.text,
        "item: hive body; count: 4; note: deep frames\n\n\
         item: super; count: 6; note: shallow frames\n\n\
         item: queen excluder; count: 2\n\n\
         item: smoker; count: 1; note: keep dry, fuel inside"
    );
    assert_eq!(doc.sections.len(), 1);
    assert_eq!(doc.sections[0].kind, doctune_ingest::SectionKind::Sheet);
}

/// This crate's folder, read when the test runs (cargo sets it then too): a test binary that
/// cargo reuses from a build in another checkout sharing the target folder must read this
/// checkout's fixtures, not that one's.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
