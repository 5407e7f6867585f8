#![no_main]
//! A chat template's source from arbitrary text, compiled and rendered as at generation and
//! dataset build (fuel and the output cap on), and asked for its end-of-turn marker.
use doctune_tokenizer::{ChatTemplate, Message};

libfuzzer_sys::fuzz_target!(|source: &str| {
    let Ok(t) = ChatTemplate::from_source(source, Some("<s>"), Some("</s>")) else {
        return;
    };
    let conversation = [
        Message::new("system", "Be brief."),
        Message::new("user", "When do bees swarm?"),
        Message::new("assistant", "In late spring."),
    ];
    let _ = t.render(&conversation, true);
    let _ = t.render(&conversation[1..2], false);
    let _ = t.end_of_turn();
});
