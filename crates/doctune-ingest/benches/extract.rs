//! Ingestion benchmark: pages/s and MB/s of DocTune's extraction over a generated corpus of
//! ≥ 200 PDF pages (made by LibreOffice from generated prose) plus DOCX and HTML, against pypdf
//! and pdfminer.six on the same PDFs in the same invocation, with a character-level similarity
//! of each tool's text to the source text.
//!
//! Run: `cargo bench -p doctune-ingest --bench extract`
//! Needs LibreOffice (`soffice`) and a Python with `pypdf` and `pdfminer.six`
//! (`DOCTUNE_BENCH_PYTHON`, default `python3`).

use doctune_core::{CancelToken, NullSink};
use doctune_ingest::{clean, extract, Limits};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const DOCS: usize = 10;
const PARAGRAPHS_PER_DOC: usize = 170; // about 21 pages each in LibreOffice's default layout

const WORDS: [&str; 48] = [
    "the",
    "colony",
    "honey",
    "frame",
    "brood",
    "queen",
    "worker",
    "forager",
    "nectar",
    "pollen",
    "office",
    "efficient",
    "affluent",
    "find",
    "flight",
    "field",
    "hive",
    "comb",
    "wax",
    "winter",
    "spring",
    "temperature",
    "inspection",
    "extraction",
    "of",
    "and",
    "in",
    "with",
    "during",
    "after",
    "before",
    "a",
    "strong",
    "weak",
    "healthy",
    "careful",
    "beekeeper",
    "records",
    "every",
    "week",
    "notes",
    "weather",
    "flowers",
    "meadow",
    "orchard",
    "ventilation",
    "moisture",
    "treatment",
];

/// Deterministic prose: a linear congruential generator picks the words.
fn prose(doc: usize) -> Vec<String> {
    let mut state = 0x2545_F491_4F6C_DD1Du64.wrapping_add(doc as u64);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..PARAGRAPHS_PER_DOC)
        .map(|_| {
            let n = 40 + next() % 40;
            let mut p: Vec<&str> = (0..n).map(|_| WORDS[next() % WORDS.len()]).collect();
            p[0] = "The";
            format!("{}.", p.join(" "))
        })
        .collect()
}

fn normalise(s: &str) -> String {
    clean::paragraph(s)
}

/// Character-level similarity (2·matches / total, as difflib's ratio) of two normalised texts.
fn similarity(a: &str, b: &str) -> f64 {
    similar::TextDiff::configure()
        .algorithm(similar::Algorithm::Myers)
        .timeout(std::time::Duration::from_secs(20))
        .diff_chars(a, b)
        .ratio() as f64
}

fn soffice(input: &Path, fmt: &str, out: &Path, profile: &Path) {
    let status = Command::new("soffice")
        .arg("--headless")
        .arg(format!(
            "-env:UserInstallation=file://{}",
            profile.display()
        ))
        .args([
            "--infilter=HTML (StarWriter)",
            "--convert-to",
            fmt,
            "--outdir",
        ])
        .arg(out)
        .arg(input)
        .output()
        .expect("LibreOffice (soffice) is needed to build the corpus");
    assert!(
        status.status.success(),
        "soffice failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (src, out) = (dir.path().join("src"), dir.path().join("out"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let mut sources = Vec::new();
    eprintln!("building the corpus with LibreOffice …");
    for d in 0..DOCS {
        let paras = prose(d);
        let html: String = paras.iter().map(|p| format!("<p>{p}</p>")).collect();
        let html_path = src.join(format!("doc{d:02}.html"));
        std::fs::write(&html_path, format!("<!doctype html><html><head><meta charset=\"utf-8\"><title>Doc {d}</title></head><body>{html}</body></html>")).unwrap();
        soffice(&html_path, "pdf", &out, &dir.path().join("profile"));
        if d < 3 {
            soffice(&html_path, "docx", &out, &dir.path().join("profile"));
        }
        sources.push(normalise(&paras.join(" ")));
    }
    let pdfs: Vec<PathBuf> = (0..DOCS)
        .map(|d| out.join(format!("doc{d:02}.pdf")))
        .collect();
    let pdf_bytes: u64 = pdfs.iter().map(|p| p.metadata().unwrap().len()).sum();

    // DocTune, in process.
    let limits = Limits::default();
    let start = Instant::now();
    let mut pages = 0u32;
    let mut ours = Vec::new();
    for p in &pdfs {
        let doc = extract(p, &limits, &NullSink, &CancelToken::new()).unwrap();
        pages += doc.pages;
        ours.push(normalise(&doc.text));
    }
    let ours_secs = start.elapsed().as_secs_f64();
    assert!(
        pages >= 200,
        "the corpus must have at least 200 pages, it has {pages}"
    );

    // Other formats, for MB/s.
    let mut other = Vec::new();
    for (kind, paths) in [
        (
            "DOCX",
            (0..3)
                .map(|d| out.join(format!("doc{d:02}.docx")))
                .collect::<Vec<_>>(),
        ),
        (
            "HTML",
            (0..DOCS)
                .map(|d| src.join(format!("doc{d:02}.html")))
                .collect::<Vec<_>>(),
        ),
    ] {
        let bytes: u64 = paths.iter().map(|p| p.metadata().unwrap().len()).sum();
        let t = Instant::now();
        let mut sim = 0.0;
        for (i, p) in paths.iter().enumerate() {
            let doc = extract(p, &limits, &NullSink, &CancelToken::new()).unwrap();
            sim += similarity(&sources[i], &normalise(&doc.text));
        }
        other.push((
            kind,
            paths.len(),
            bytes,
            t.elapsed().as_secs_f64(),
            sim / paths.len() as f64,
        ));
    }

    // pypdf and pdfminer.six on the same PDFs.
    let python = std::env::var("DOCTUNE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(&crate_dir()).join("benches/pdf_reference.py");
    let refdir = dir.path().join("ref");
    std::fs::create_dir_all(&refdir).unwrap();
    eprintln!("running pypdf and pdfminer.six …");
    let output = Command::new(&python)
        .arg(&script)
        .arg(&refdir)
        .args(&pdfs)
        .output()
        .expect("python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut reference = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let tool = v["tool"].as_str().unwrap().to_string();
        let secs = v["seconds"].as_f64().unwrap();
        let sim: f64 = (0..DOCS)
            .map(|d| {
                let t =
                    std::fs::read_to_string(refdir.join(format!("doc{d:02}.{tool}.txt"))).unwrap();
                similarity(&sources[d], &normalise(&t))
            })
            .sum::<f64>()
            / DOCS as f64;
        reference.push((tool, secs, sim));
    }
    let our_sim: f64 = (0..DOCS)
        .map(|d| similarity(&sources[d], &ours[d]))
        .sum::<f64>()
        / DOCS as f64;

    let mb = pdf_bytes as f64 / 1e6;
    println!("PDF corpus: {DOCS} files, {pages} pages, {mb:.2} MB (LibreOffice, generated prose)");
    println!(
        "{:<12} {:>9} {:>10} {:>8} {:>11} {:>12}",
        "tool", "seconds", "pages/s", "MB/s", "similarity", "DocTune is"
    );
    println!(
        "{:<12} {:>9.3} {:>10.1} {:>8.2} {:>11.4} {:>12}",
        "DocTune",
        ours_secs,
        pages as f64 / ours_secs,
        mb / ours_secs,
        our_sim,
        "—"
    );
    for (tool, secs, sim) in &reference {
        println!(
            "{:<12} {:>9.3} {:>10.1} {:>8.2} {:>11.4} {:>11.1}×",
            tool,
            secs,
            pages as f64 / secs,
            mb / secs,
            sim,
            secs / ours_secs
        );
    }
    for (kind, n, bytes, secs, sim) in other {
        println!(
            "{kind}: {n} files, {:.2} MB in {secs:.3} s = {:.2} MB/s, similarity {sim:.4}",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / secs
        );
    }
}

/// This crate's folder, read when the test runs (cargo sets it then too): a test binary that
/// cargo reuses from a build in another checkout sharing the target folder must read this
/// checkout's fixtures, not that one's.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
