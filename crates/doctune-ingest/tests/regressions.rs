//! Inputs the fuzzers found (tests/regressions/<target>-<name>), replayed through the isolated
//! extraction the product uses: each must end as a document or a specific error naming the file —
//! never a panic that escapes, an abort or a hang.

use doctune_core::{CancelToken, NullSink};
use doctune_ingest::{isolated, Format, Limits};
use std::path::PathBuf;

fn formats_for(target: &str) -> Vec<Format> {
    match target {
        "pdf" => vec![Format::Pdf],
        "rtf" => vec![Format::Rtf],
        "html" => vec![Format::Html],
        "office" => vec![Format::Docx, Format::Odt, Format::Epub, Format::Xlsx],
        _ => vec![
            Format::Markdown,
            Format::Text,
            Format::Csv,
            Format::Tsv,
            Format::Json,
            Format::Jsonl,
        ],
    }
}

#[test]
fn fuzz_findings_end_in_a_result() {
    let dir = PathBuf::from(crate_dir()).join("tests/regressions");
    let (mut replayed, mut caught) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some((target, _)) = name.split_once('-') else {
            continue;
        };
        let bytes = std::fs::read(&path).unwrap();
        for format in formats_for(target) {
            let input = if target == "office" || target == "text" {
                bytes.get(1..).unwrap_or(&[]).to_vec()
            } else {
                bytes.clone()
            };
            match isolated(
                &path,
                format,
                input,
                &Limits::default(),
                &NullSink,
                &CancelToken::new(),
            ) {
                Ok(_) => {}
                Err(e) => {
                    assert!(e.to_string().contains(&name), "{name} as {format}: {e}");
                    caught += usize::from(e.to_string().contains("parser failed on this file"));
                }
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 1, "no regression inputs in {}", dir.display());
    // The PDF findings panic inside pdf-extract / adobe-cmap-parser: isolation must turn each
    // panic into an error.
    assert!(caught >= 8, "only {caught} parser panics were caught");
}

/// This crate's folder, read when the test runs (cargo sets it then too): a test binary that
/// cargo reuses from a build in another checkout sharing the target folder must read this
/// checkout's fixtures, not that one's.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
