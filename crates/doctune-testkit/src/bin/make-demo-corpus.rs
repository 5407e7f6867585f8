//! Writes the demo corpus's PDF and DOCX from its Markdown pages (see
//! `doctune_testkit::demo_corpus`). Run: `cargo run -p doctune-testkit --bin make-demo-corpus`.

use doctune_testkit::demo_corpus::{corpus_dir, docx, pages, pdf, DOCX_NAME, PDF_NAME};

fn main() -> std::io::Result<()> {
    let dir = corpus_dir();
    let pages = pages(&dir)?;
    std::fs::write(dir.join(PDF_NAME), pdf(&pages))?;
    std::fs::write(dir.join(DOCX_NAME), docx(&pages))?;
    println!(
        "wrote {PDF_NAME} and {DOCX_NAME} from {} pages in {}",
        pages.len(),
        dir.display()
    );
    Ok(())
}
