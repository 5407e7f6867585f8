#![no_main]
//! A model folder's tokenizer files from arbitrary bytes — the part before the first 0xFF byte is
//! tokenizer.json, the rest tokenizer_config.json — loaded as DocTune loads a model's, then used:
//! encode, decode, stop strings, and the chat template if one compiled.
use doctune_tokenizer::{ModelTokenizer, Message};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // `ModelTokenizer::load` catches the tokenizers crate's panics on malformed files (a
    // refusal, not a crash); libfuzzer-sys's hook would abort on those. Without a hook, a panic
    // that escapes still reaches libfuzzer-sys's catch_unwind, which aborts: still a finding.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let (tok, cfg) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tok).unwrap();
    if let Some(cfg) = cfg {
        std::fs::write(dir.path().join("tokenizer_config.json"), cfg).unwrap();
    }
    let Ok(t) = ModelTokenizer::load(dir.path()) else {
        return;
    };
    if let Ok(ids) = t.encode("Open the hive on a warm day. <s></s>", true) {
        let _ = t.decode(&ids, false);
        let mut stream = t.decode_stream(true);
        for id in ids {
            let _ = stream.step(id);
        }
    }
    let _ = t.stop_strings(true);
    if let Some(template) = t.chat_template() {
        let _ = template.render(&[Message::new("user", "hi")], true);
    }
});
