//! Inputs the fuzz targets found (tests/regressions/<target>-<name>), replayed: each must end in
//! a tokenizer or a clear error naming the file, never a panic. A `tokenizer-*` input is a model
//! folder's files as the `tokenizer` target reads them: tokenizer.json up to the first 0xFF
//! byte, tokenizer_config.json after it.

use doctune_tokenizer::ModelTokenizer;
use std::path::PathBuf;

#[test]
fn fuzz_findings_end_in_a_result() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        if !name.starts_with("tokenizer-") {
            continue;
        }
        let folder = tempfile::tempdir().unwrap();
        let (tok, cfg) = match bytes.iter().position(|&b| b == 0xFF) {
            Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
            None => (&bytes[..], None),
        };
        std::fs::write(folder.path().join("tokenizer.json"), tok).unwrap();
        if let Some(cfg) = cfg {
            std::fs::write(folder.path().join("tokenizer_config.json"), cfg).unwrap();
        }
        if let Err(e) = ModelTokenizer::load(folder.path()) {
            let e = e.to_string();
            assert!(
                e.contains("tokenizer.json: is not a tokenizer DocTune can read")
                    || e.contains("tokenizer_config.json"),
                "{name}: {e}"
            );
        }
        replayed += 1;
    }
    assert!(replayed >= 1, "no regression inputs in {}", dir.display());
}
