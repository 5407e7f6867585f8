#![no_main]
//! The text-like extractors (Markdown, text, CSV, TSV, JSON, JSONL); the first byte picks one.
use doctune_ingest::Format;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let formats = [Format::Markdown, Format::Text, Format::Csv, Format::Tsv, Format::Json, Format::Jsonl];
    let _ = doctune_ingest::parse_as(formats[pick as usize % formats.len()], rest, &doctune_ingest::Limits::default());
});
