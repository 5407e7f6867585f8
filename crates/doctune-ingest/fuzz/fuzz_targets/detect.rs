#![no_main]
//! Format detection on arbitrary bytes, with each extension hint.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for ext in [None, Some("pdf"), Some("docx"), Some("md"), Some("csv")] {
        let _ = doctune_ingest::detect_reader(std::io::Cursor::new(data), ext);
    }
});
