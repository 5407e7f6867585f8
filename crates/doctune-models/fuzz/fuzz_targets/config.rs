#![no_main]
//! `config.json` from arbitrary bytes, read and range-checked as a model folder's is, then the
//! figures DocTune computes from an accepted config (rotary width, parameter count).
use doctune_models::ModelConfig;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(cfg) = ModelConfig::from_json(&value, std::path::Path::new("config.json")) {
        let _ = cfg.rotary_dim();
        let _ = cfg.parameter_count();
    }
});
