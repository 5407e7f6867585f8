#![no_main]
//! The Html extractor on arbitrary bytes, unisolated, so a panic is a finding.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = doctune_ingest::parse_as(doctune_ingest::Format::Html, data, &doctune_ingest::Limits::default());
});
