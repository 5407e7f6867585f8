"""Reference PDF text extraction for DocTune's ingestion benchmark (benches/extract.rs).

Usage: python3 pdf_reference.py OUT_DIR PDF...
For each PDF, extracts the text with pypdf and with pdfminer.six, writes it to
OUT_DIR/<name>.<tool>.txt, and prints one JSON line: {"tool", "seconds", "pages"}.
Not part of DocTune; needs `pip install pypdf pdfminer.six`.
"""
import json
import os
import sys
import time

from pypdf import PdfReader
from pdfminer.high_level import extract_text as pdfminer_text


def run(tool, fn, out_dir, pdfs):
    pages = 0
    start = time.perf_counter()
    for pdf in pdfs:
        text, n = fn(pdf)
        pages += n
        name = os.path.splitext(os.path.basename(pdf))[0]
        with open(os.path.join(out_dir, f"{name}.{tool}.txt"), "w", encoding="utf-8") as f:
            f.write(text)
    print(json.dumps({"tool": tool, "seconds": time.perf_counter() - start, "pages": pages}), flush=True)


def with_pypdf(pdf):
    reader = PdfReader(pdf)
    return "\n".join(p.extract_text() or "" for p in reader.pages), len(reader.pages)


def with_pdfminer(pdf):
    return pdfminer_text(pdf), len(PdfReader(pdf).pages)


if __name__ == "__main__":
    out_dir, pdfs = sys.argv[1], sys.argv[2:]
    run("pypdf", with_pypdf, out_dir, pdfs)
    run("pdfminer", with_pdfminer, out_dir, pdfs)
