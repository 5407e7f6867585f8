//! A new tokenizer, trained on a person's own text: byte-level BPE (GPT-2's byte alphabet and
//! split rule, so every string encodes and llama.cpp reads it as `gpt2` / `gpt-2`) trained with
//! the `tokenizers` crate's `BpeTrainer`, with the special tokens DocTune's new models use
//! ([`SPECIAL_TOKENS`]: padding, BOS, EOS and ChatML's turn markers), BOS added to every
//! encoding (`TemplateProcessing`), and a ChatML chat template. [`write_files`] writes
//! `tokenizer.json`, `tokenizer_config.json` and `chat_template.jinja` as transformers does.

use crate::{Result, TokenizerError};
use std::path::Path;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

/// The special tokens, in id order: `<pad>` 0, `<s>` 1 (BOS), `</s>` 2 (EOS), `<|im_start|>` 3,
/// `<|im_end|>` 4 (the end of a chat turn, also a stop token).
pub const SPECIAL_TOKENS: [&str; 5] = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"];
pub const PAD_ID: u32 = 0;
pub const BOS_ID: u32 = 1;
pub const EOS_ID: u32 = 2;
pub const END_OF_TURN_ID: u32 = 4;

/// The smallest vocabulary: the 256 bytes and the special tokens, with room for merges.
pub const MIN_VOCAB: usize = 384;
/// The largest vocabulary a new tokenizer may have.
pub const MAX_VOCAB: usize = 131_072;

/// ChatML, the template DocTune's new models are trained and chatted with.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Trains a byte-level BPE tokenizer of at most `vocab_size` tokens on `texts` (fewer when the
/// text has fewer pairs seen at least twice).
pub fn train_bpe<I, S>(texts: I, vocab_size: usize) -> Result<Tokenizer>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    if !(MIN_VOCAB..=MAX_VOCAB).contains(&vocab_size) {
        return Err(TokenizerError::Tokenize(format!(
            "the vocabulary size must be between {MIN_VOCAB} and {MAX_VOCAB}, not {vocab_size}"
        )));
    }
    let err = |e: tokenizers::Error| TokenizerError::Tokenize(format!("training failed: {e}"));
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let bos = SPECIAL_TOKENS[BOS_ID as usize];
    let post = TemplateProcessing::builder()
        .try_single(format!("{bos} $A"))
        .and_then(|b| b.try_pair(format!("{bos} $A {bos} $B")))
        .map_err(|e| TokenizerError::Tokenize(e.to_string()))?
        .special_tokens(vec![(bos, BOS_ID)])
        .build()
        .map_err(|e| TokenizerError::Tokenize(e.to_string()))?;
    let mut tok =
        TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, TemplateProcessing, ByteLevel>::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
            .with_post_processor(Some(post))
            .with_decoder(Some(ByteLevel::default()))
            .build()
            .map_err(err)?;
    tok.train(&mut trainer, texts).map_err(err)?;
    let tok: Tokenizer = tok.into();
    for (id, t) in SPECIAL_TOKENS.iter().enumerate() {
        if tok.token_to_id(t) != Some(id as u32) {
            return Err(TokenizerError::Tokenize(format!(
                "the trained vocabulary does not hold {t} at id {id}"
            )));
        }
    }
    Ok(tok)
}

/// Writes `tokenizer.json`, `tokenizer_config.json` and `chat_template.jinja` into `dir`.
pub fn write_files(dir: &Path, tok: &Tokenizer) -> Result<()> {
    let file = |name: &str| dir.join(name);
    let io = |path: &Path, e: String| TokenizerError::File {
        path: path.to_path_buf(),
        message: format!("cannot write: {e}"),
    };
    let tj = file("tokenizer.json");
    tok.save(&tj, true).map_err(|e| io(&tj, e.to_string()))?;
    let cfg = serde_json::json!({
        "bos_token": SPECIAL_TOKENS[BOS_ID as usize],
        "eos_token": SPECIAL_TOKENS[EOS_ID as usize],
        "pad_token": SPECIAL_TOKENS[PAD_ID as usize],
        "add_bos_token": true,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 1_000_000_000u64,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    let tc = file("tokenizer_config.json");
    std::fs::write(&tc, serde_json::to_vec_pretty(&cfg).unwrap_or_default())
        .map_err(|e| io(&tc, e.to_string()))?;
    let ct = file("chat_template.jinja");
    std::fs::write(&ct, CHAT_TEMPLATE).map_err(|e| io(&ct, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, ModelTokenizer};

    const TEXT: &str = "DocTune fine-tunes a language model on your own documents. \
        It extracts the text, builds a dataset, trains, and exports the model. \
        Documents stay on your machine; the model learns their words.";

    #[test]
    fn trains_a_tokenizer_that_loads_round_trips_and_chats() {
        let texts = vec![TEXT.to_string(); 20];
        let tok = train_bpe(texts.iter(), 512).unwrap();
        let n = tok.get_vocab_size(true);
        assert!(n > 256 + SPECIAL_TOKENS.len() && n <= 512, "{n}");
        let d = tempfile::tempdir().unwrap();
        write_files(d.path(), &tok).unwrap();
        let mt = ModelTokenizer::load(d.path()).unwrap();
        let ids = mt.encode("DocTune trains the model.", true).unwrap();
        assert_eq!(ids[0], BOS_ID);
        assert!(ids.len() < 12, "learned merges shorten the text: {ids:?}");
        assert_eq!(mt.decode(&ids, true).unwrap(), "DocTune trains the model.");
        // Text it never saw still encodes (byte-level): no unknown token.
        let odd = "Ünïcödé ✓ 汉字";
        assert_eq!(
            mt.decode(&mt.encode(odd, true).unwrap(), true).unwrap(),
            odd
        );
        let rendered = mt
            .require_chat_template()
            .unwrap()
            .render(&[Message::new("user", "hi")], true)
            .unwrap();
        assert_eq!(
            rendered,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        let chat_ids = mt.encode(&rendered, false).unwrap();
        assert_eq!(chat_ids[0], 3, "<|im_start|> is one token");
        assert!(chat_ids.contains(&END_OF_TURN_ID));
        assert_eq!(mt.pad_token(), Some("<pad>"));
    }

    #[test]
    fn vocabulary_sizes_out_of_range_are_refused() {
        for bad in [0, 100, MAX_VOCAB + 1] {
            let e = train_bpe(std::iter::once("x"), bad).unwrap_err();
            assert!(e.to_string().contains("vocabulary size"), "{e}");
        }
    }
}
