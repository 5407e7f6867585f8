#![no_main]
//! The ZIP-based extractors (DOCX, ODT, EPUB, XLSX) on arbitrary bytes; the first byte picks one.
use doctune_ingest::Format;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let format = [Format::Docx, Format::Odt, Format::Epub, Format::Xlsx][pick as usize % 4];
    let _ = doctune_ingest::parse_as(format, rest, &doctune_ingest::Limits::default());
});
