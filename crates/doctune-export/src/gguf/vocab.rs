//! The tokenizer as llama.cpp reads it from a GGUF file: `tokenizer.ggml.model` (`gpt2` for
//! byte-level BPE, `llama` for SentencePiece-style BPE with byte fallback), the pre-tokenizer
//! (`tokenizer.ggml.pre`), every token with its type, the merges (gpt2) or scores (llama), the
//! special token ids, whether BOS/EOS are added, and the chat template.
//!
//! The pre-tokenizer is chosen as llama.cpp's converter chooses it — the sha256 of the ids the
//! tokenizer gives a fixed text, looked up among known tokenizers — and, for a tokenizer not in
//! that list (a tokenizer trained from scratch, say), by the split rule in `tokenizer.json`
//! matched against the rules llama.cpp implements. It is never empty and never a value llama.cpp
//! does not know (which makes it refuse the file); when no rule matches, `default` is written and
//! the export says so.

use super::file::{Array, Value};
use crate::ExportError;
use doctune_tokenizer::ModelTokenizer;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The text llama.cpp's converter tokenises to identify a pre-tokenizer
/// (`get_vocab_base_pre` in `convert_hf_to_gguf.py`).
pub const CHECK_TEXT: &str = "\u{a} \u{a}\u{a} \u{a}\u{a}\u{a} \u{9} \u{9}\u{9} \u{9}\u{a}  \u{a}   \u{a}    \u{a}     \u{a}\u{1f680} (normal) \u{1f636}\u{200d}\u{1f32b}\u{fe0f} (multiple emojis concatenated) \u{2705} \u{1f999}\u{1f999} 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 \u{1780}\u{17b6}\u{1793}\u{17cb}\u{178f}\u{17c2}\u{1796}\u{17b7}\u{179f}\u{17c1}\u{179f}\u{17a2}\u{17b6}\u{1785}\u{1f601} ?\u{6211}\u{60f3}\u{5728}apple\u{5de5}\u{4f5c}1314151\u{5929}\u{ff5e} ------======= \u{43d}\u{435}\u{449}\u{43e} \u{43d}\u{430} \u{411}\u{44a}\u{43b}\u{433}\u{430}\u{440}\u{441}\u{43a}\u{438} ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

/// Known tokenizers: the hash of their ids for [`CHECK_TEXT`] and llama.cpp's pre-tokenizer
/// name (from `convert_hf_to_gguf.py`, for the families DocTune supports).
const KNOWN: [(&str, &str); 6] = [
    // meta-llama/Meta-Llama-3-8B (Llama 3, 3.1, 3.2)
    (
        "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5",
        "llama-bpe",
    ),
    // Qwen/Qwen1.5-7B (Qwen2, Qwen2.5, Qwen3)
    (
        "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea",
        "qwen2",
    ),
    // Qwen/Qwen3-Embedding-0.6B
    (
        "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c",
        "qwen2",
    ),
    // HuggingFaceTB/SmolLM-135M
    (
        "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249",
        "smollm",
    ),
    // openai-community/gpt2
    (
        "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454",
        "gpt-2",
    ),
    // mistralai/Mistral-Nemo-Base-2407
    (
        "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e",
        "tekken",
    ),
];

/// Split rules of `tokenizer.json` pre-tokenizers and the llama.cpp pre-tokenizer that
/// implements each.
const RULES: [(&str, &str); 2] = [
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        "llama-bpe",
    ),
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        "qwen2",
    ),
];

// GGUF token types (llama.cpp's `llama_token_type`).
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// A tokenizer in GGUF's terms.
#[derive(Debug, Clone)]
pub struct Vocab {
    /// `gpt2` or `llama`.
    pub model: &'static str,
    pub pre: String,
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub merges: Option<Vec<String>>,
    pub scores: Option<Vec<f32>>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub pad: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub chat_template: Option<String>,
    /// How the pre-tokenizer was chosen, when not by a known hash.
    pub notes: Vec<String>,
}

fn bad(path: &Path, message: impl Into<String>) -> ExportError {
    ExportError::Input {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Whether a token's text looks like a control token (`<|eot_id|>`, `<unused3>`), as llama.cpp's
/// converter judges added tokens not marked special.
fn looks_special(t: &str) -> bool {
    (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
        || matches!(t, "<pad>" | "<mask>")
}

fn is_byte_level(pre: &Json) -> bool {
    match pre.get("type").and_then(Json::as_str) {
        Some("ByteLevel") => true,
        Some("Sequence") => pre
            .get("pretokenizers")
            .and_then(Json::as_array)
            .is_some_and(|a| a.iter().any(is_byte_level)),
        _ => false,
    }
}

/// The pre-tokenizer by `tokenizer.json`'s split rule.
fn pre_by_rule(pre: &Json) -> Option<&'static str> {
    match pre.get("type").and_then(Json::as_str)? {
        "ByteLevel" => {
            let regex = pre.get("use_regex").and_then(Json::as_bool).unwrap_or(true);
            let prefix = pre
                .get("add_prefix_space")
                .and_then(Json::as_bool)
                .unwrap_or(false);
            (regex && !prefix).then_some("gpt-2")
        }
        "Sequence" => {
            let parts = pre.get("pretokenizers")?.as_array()?;
            let split = parts.iter().find_map(|p| {
                (p.get("type")?.as_str()? == "Split")
                    .then(|| p.get("pattern")?.get("Regex")?.as_str())
                    .flatten()
            })?;
            RULES.iter().find(|(r, _)| *r == split).map(|(_, n)| *n)
        }
        _ => None,
    }
}

/// The merges of a BPE `tokenizer.json` as `"a b"` strings (both of its layouts).
fn merges_of(model: &Json) -> Vec<String> {
    model
        .get("merges")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|m| match m {
                    Json::String(s) => Some(s.clone()),
                    Json::Array(p) if p.len() == 2 => {
                        Some(format!("{} {}", p[0].as_str()?, p[1].as_str()?))
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The pieces of a SentencePiece `tokenizer.model` (protobuf `ModelProto`, field 1: pieces with
/// `piece` = 1, `score` = 2, `type` = 3). Only what GGUF needs is read.
pub fn read_sentencepiece(bytes: &[u8]) -> Option<Vec<(String, f32, i32)>> {
    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*i)?;
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn skip(b: &[u8], i: &mut usize, wire: u64) -> Option<()> {
        match wire {
            0 => {
                varint(b, i)?;
            }
            1 => *i += 8,
            2 => {
                let n = varint(b, i)? as usize;
                *i = i.checked_add(n)?;
            }
            5 => *i += 4,
            _ => return None,
        }
        (*i <= b.len()).then_some(())
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let key = varint(bytes, &mut i)?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 1 && wire == 2 {
            let n = varint(bytes, &mut i)? as usize;
            let end = i.checked_add(n).filter(|&e| e <= bytes.len())?;
            let msg = &bytes[i..end];
            i = end;
            let (mut piece, mut score, mut ty) = (String::new(), 0f32, NORMAL);
            let mut j = 0;
            while j < msg.len() {
                let key = varint(msg, &mut j)?;
                match (key >> 3, key & 7) {
                    (1, 2) => {
                        let n = varint(msg, &mut j)? as usize;
                        let e = j.checked_add(n).filter(|&e| e <= msg.len())?;
                        piece = String::from_utf8_lossy(&msg[j..e]).into_owned();
                        j = e;
                    }
                    (2, 5) => {
                        let b: [u8; 4] = msg.get(j..j + 4)?.try_into().ok()?;
                        score = f32::from_le_bytes(b);
                        j += 4;
                    }
                    (3, 0) => ty = varint(msg, &mut j)? as i32,
                    (_, w) => skip(msg, &mut j, w)?,
                }
            }
            out.push((piece, score, ty));
        } else {
            skip(bytes, &mut i, wire)?;
        }
    }
    Some(out)
}

impl Vocab {
    /// The tokenizer of the model folder `dir` for a model of `vocab_size` rows.
    pub fn read(dir: &Path, tok: &ModelTokenizer, vocab_size: usize) -> Result<Self, ExportError> {
        let path = dir.join("tokenizer.json");
        let bytes = doctune_tokenizer::read_limited(&path, doctune_tokenizer::MAX_TOKENIZER_BYTES)?;
        let json: Json = serde_json::from_slice(&bytes)
            .map_err(|e| bad(&path, format!("is not valid JSON: {e}")))?;
        let model = json.get("model").cloned().unwrap_or_default();
        if model.get("type").and_then(Json::as_str) != Some("BPE") {
            return Err(ExportError::Unsupported(format!(
                "{}: a {} tokenizer; GGUF export supports BPE tokenizers (byte-level or SentencePiece-style)",
                path.display(),
                model.get("type").and_then(Json::as_str).unwrap_or("unknown")
            )));
        }
        let vocab: HashMap<String, u32> = model
            .get("vocab")
            .and_then(Json::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_u64()? as u32)))
                    .collect()
            })
            .unwrap_or_default();
        let mut added: BTreeMap<u32, (String, bool)> = BTreeMap::new();
        for t in json
            .get("added_tokens")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(id), Some(content)) = (
                t.get("id").and_then(Json::as_u64),
                t.get("content").and_then(Json::as_str),
            ) {
                let special = t.get("special").and_then(Json::as_bool).unwrap_or(false);
                added.insert(id as u32, (content.to_owned(), special));
            }
        }
        let max_id = vocab
            .values()
            .chain(added.keys())
            .max()
            .copied()
            .unwrap_or(0) as usize;
        if max_id >= vocab_size {
            return Err(bad(
                &path,
                format!("has token id {max_id}, beyond the model's vocab_size {vocab_size}"),
            ));
        }
        let pre_json = json.get("pre_tokenizer").cloned().unwrap_or_default();
        let byte_level = is_byte_level(&pre_json);
        let byte_fallback = model
            .get("byte_fallback")
            .and_then(Json::as_bool)
            .unwrap_or(false);
        let mut tokens = vec![String::new(); vocab_size];
        for (t, &id) in &vocab {
            tokens[id as usize] = t.clone();
        }
        let mut notes = Vec::new();
        let (ggml_model, pre, merges, scores, mut types) = if byte_level {
            let mut types = vec![NORMAL; vocab_size];
            let ids = tok.encode(CHECK_TEXT, true)?;
            let repr = format!(
                "[{}]",
                ids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let hash = hex::encode(Sha256::digest(repr.as_bytes()));
            let pre = match KNOWN.iter().find(|(h, _)| *h == hash) {
                Some((_, name)) => name.to_string(),
                None => match pre_by_rule(&pre_json) {
                    Some(name) => {
                        notes.push(format!("tokenizer.ggml.pre = {name}: the tokenizer is not one llama.cpp lists, so its pre-tokenizer was chosen by its split rule, which llama.cpp's `{name}` implements"));
                        name.to_string()
                    }
                    None => {
                        notes.push("tokenizer.ggml.pre = default: the tokenizer's pre-tokenizer matches none that llama.cpp implements; llama.cpp may split unusual text differently than the model was trained on".into());
                        "default".into()
                    }
                },
            };
            for (i, t) in tokens.iter().enumerate() {
                if t.is_empty() && !added.contains_key(&(i as u32)) {
                    types[i] = UNUSED;
                }
            }
            ("gpt2", pre, Some(merges_of(&model)), None, types)
        } else if byte_fallback {
            let mut types = vec![NORMAL; vocab_size];
            let mut scores = vec![-10000.0f32; vocab_size];
            let spm = doctune_tokenizer::read_limited(
                &dir.join("tokenizer.model"),
                doctune_tokenizer::MAX_TOKENIZER_BYTES,
            )
            .ok()
            .and_then(|b| read_sentencepiece(&b));
            match spm {
                Some(pieces) => {
                    for (i, (piece, score, ty)) in pieces.into_iter().enumerate().take(vocab_size) {
                        tokens[i] = piece;
                        scores[i] = score;
                        types[i] = ty;
                    }
                }
                None => {
                    // No tokenizer.model: scores from the merges' ranks (HF orders SentencePiece
                    // merges by the merged piece's score), so llama.cpp merges in the same order.
                    let mut rank: HashMap<String, usize> = HashMap::new();
                    for (r, m) in merges_of(&model).iter().enumerate() {
                        if let Some((a, b)) = m.split_once(' ') {
                            rank.entry(format!("{a}{b}")).or_insert(r);
                        }
                    }
                    for (i, t) in tokens.iter().enumerate() {
                        if let Some(r) = rank.get(t) {
                            scores[i] = -(*r as f32);
                        } else if !t.is_empty() {
                            scores[i] = 0.0;
                        }
                        if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') {
                            types[i] = BYTE;
                        } else if t.is_empty() {
                            types[i] = UNUSED;
                        }
                    }
                    notes.push("no tokenizer.model beside tokenizer.json: SentencePiece scores were derived from the merges' order".into());
                }
            }
            ("llama", "default".to_string(), None, Some(scores), types)
        } else {
            return Err(ExportError::Unsupported(format!(
                "{}: a BPE tokenizer that is neither byte-level nor SentencePiece-style (byte fallback); llama.cpp has no tokenizer for it",
                path.display()
            )));
        };
        for (&id, (content, special)) in &added {
            let i = id as usize;
            tokens[i] = content.clone();
            types[i] = if *special || looks_special(content) {
                CONTROL
            } else {
                USER_DEFINED
            };
        }
        let unk = tok.unk_token().and_then(|t| tok.token_to_id(t));
        if let (Some(u), "llama") = (unk, ggml_model) {
            types[u as usize] = UNKNOWN;
        }
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[PAD{i}]");
                types[i] = UNUSED;
            }
        }
        let id = |t: Option<&str>| t.and_then(|t| tok.token_to_id(t));
        let bos = id(tok.bos_token());
        let eos = id(tok.eos_token()).or_else(|| tok.stop_ids().first().copied());
        let eot = tok
            .chat_template()
            .and_then(|t| t.end_of_turn())
            .and_then(|marker| tok.token_to_id(&marker));
        let with = tok.encode("a", true)?;
        let without = tok.encode("a", false)?;
        let add_bos =
            bos.is_some() && with.first() == bos.as_ref() && without.first() != bos.as_ref();
        let add_eos =
            eos.is_some() && with.last() == eos.as_ref() && without.last() != eos.as_ref();
        Ok(Self {
            model: ggml_model,
            pre,
            tokens,
            types,
            merges,
            scores,
            bos,
            eos,
            eot,
            pad: id(tok.pad_token()),
            unk,
            add_bos,
            add_eos,
            chat_template: tok.chat_template().map(|t| t.source().to_string()),
            notes,
        })
    }

    /// The `tokenizer.*` metadata.
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let mut m: Vec<(String, Value)> = vec![
            ("tokenizer.ggml.model".into(), Value::Str(self.model.into())),
            ("tokenizer.ggml.pre".into(), Value::Str(self.pre.clone())),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(Array::Str(self.tokens.clone())),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                Value::Array(Array::I32(self.types.clone())),
            ),
        ];
        if let Some(s) = &self.scores {
            m.push((
                "tokenizer.ggml.scores".into(),
                Value::Array(Array::F32(s.clone())),
            ));
        }
        if let Some(mg) = &self.merges {
            m.push((
                "tokenizer.ggml.merges".into(),
                Value::Array(Array::Str(mg.clone())),
            ));
        }
        for (key, id) in [
            ("bos_token_id", self.bos),
            ("eos_token_id", self.eos),
            ("eot_token_id", self.eot),
            ("padding_token_id", self.pad),
            ("unknown_token_id", self.unk),
        ] {
            if let Some(id) = id {
                m.push((format!("tokenizer.ggml.{key}"), Value::U32(id)));
            }
        }
        m.push((
            "tokenizer.ggml.add_bos_token".into(),
            Value::Bool(self.add_bos),
        ));
        m.push((
            "tokenizer.ggml.add_eos_token".into(),
            Value::Bool(self.add_eos),
        ));
        if let Some(t) = &self.chat_template {
            m.push(("tokenizer.chat_template".into(), Value::Str(t.clone())));
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_text_is_llama_cpps() {
        // sha256 of the UTF-8 text, as Python computes it from convert_hf_to_gguf.py's literal.
        assert_eq!(CHECK_TEXT.chars().count(), 350);
        assert_eq!(
            hex::encode(Sha256::digest(CHECK_TEXT.as_bytes())),
            "a36179c1e2b1cfcfbfad1dc779addad2ffc778201e4cf0d538bddeafa2c526da"
        );
    }

    #[test]
    fn pre_tokenizers_by_rule() {
        let gpt2 =
            serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true});
        assert_eq!(pre_by_rule(&gpt2), Some("gpt-2"));
        let llama3 = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": RULES[0].0}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]});
        assert!(is_byte_level(&llama3));
        assert_eq!(pre_by_rule(&llama3), Some("llama-bpe"));
        let other = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\d"}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "use_regex": false}]});
        assert_eq!(pre_by_rule(&other), None);
        assert!(looks_special("<|im_end|>") && !looks_special("hello"));
    }

    #[test]
    fn sentencepiece_pieces_are_read() {
        // Two pieces: ("<unk>", 0.0, UNKNOWN) and ("▁the", -3.5, NORMAL), plus an unknown field.
        fn piece(p: &str, score: f32, ty: u8) -> Vec<u8> {
            let mut m = vec![0x0a, p.len() as u8];
            m.extend_from_slice(p.as_bytes());
            m.push(0x15);
            m.extend_from_slice(&score.to_le_bytes());
            m.extend_from_slice(&[0x18, ty]);
            let mut out = vec![0x0a, m.len() as u8];
            out.extend(m);
            out
        }
        let mut b = piece("<unk>", 0.0, 2);
        b.extend(piece("\u{2581}the", -3.5, 1));
        b.extend_from_slice(&[0x12, 0x02, 0x08, 0x01]); // field 2: trainer spec, skipped
        let pieces = read_sentencepiece(&b).unwrap();
        assert_eq!(
            pieces,
            vec![("<unk>".into(), 0.0, 2), ("\u{2581}the".into(), -3.5, 1)]
        );
        assert!(read_sentencepiece(&[0x0a, 0x7f]).is_none(), "truncated");
    }
}
