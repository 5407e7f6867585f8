#![no_main]
//! The Rtf extractor on arbitrary bytes, unisolated, so a panic is a finding.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = doctune_ingest::parse_as(doctune_ingest::Format::Rtf, data, &doctune_ingest::Limits::default());
});
