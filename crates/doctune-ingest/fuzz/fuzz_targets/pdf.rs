#![no_main]
//! The Pdf extractor on arbitrary bytes, unisolated, so a panic is a finding.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = doctune_ingest::parse_as(doctune_ingest::Format::Pdf, data, &doctune_ingest::Limits::default());
});
