//! A faster exact path for the tokenizers most models use — byte-level BPE (GPT-2, Llama 3,
//! Qwen, Phi-3.5, …) — when tokenising whole documents.
//!
//! Hugging Face's pipeline tracks an alignment for every byte of every intermediate string
//! (`NormalizedString`), which costs most of its time on long documents. For a byte-level BPE
//! tokenizer the result does not need any of that: split the text with the tokenizer's own
//! regexes (the same `fancy-regex` patterns its pre-tokenizers use), map each piece's bytes to
//! the byte-level alphabet, and ask the tokenizer's own BPE model for the ids of each distinct
//! piece once (a per-batch cache). Each token's byte length is its number of byte-level
//! characters, which gives the offsets the sentence boundaries need.
//!
//! The path is taken only when `tokenizer.json` has exactly that shape — no normalizer (or NFC
//! on text that is already NFC), a `ByteLevel` pre-tokenizer optionally after `Split` regexes,
//! a BPE model without dropout or byte fallback — and, per document, only when the text
//! contains none of the tokenizer's added tokens. Every build checks it against the tokenizer's
//! own `encode` on its first documents and falls back to the full pipeline on any difference.

use aho_corasick::AhoCorasick;
use fancy_regex::Regex;
use serde_json::Value;
use std::collections::HashMap;
use tokenizers::Model;
use unicode_normalization::{is_nfc_quick, IsNormalized};

/// GPT-2's pre-tokenisation regex, which `ByteLevel { use_regex: true }` applies.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// A byte-level BPE tokenizer's pre-tokenisation, ready to run without alignments.
#[derive(Debug)]
pub struct FastByteLevel {
    splits: Vec<Regex>,
    add_prefix_space: bool,
    nfc: bool,
    byte_char: [char; 256],
    added: Option<AhoCorasick>,
    prefix: Vec<u32>,
    suffix: Vec<u32>,
}

/// GPT-2's bytes → printable characters table.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        table[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid")
        };
    }
    table
}

impl FastByteLevel {
    /// The fast path for the tokenizer described by `tokenizer_json`, if it has the supported
    /// shape. `probe` encodes with and without special tokens (to learn what the post-processor
    /// adds around a text).
    pub fn new(tokenizer_json: &Value, probe: impl Fn(bool) -> Option<Vec<u32>>) -> Option<Self> {
        let nfc = match tokenizer_json.get("normalizer") {
            None | Some(Value::Null) => false,
            Some(n) if n.get("type").and_then(Value::as_str) == Some("NFC") => true,
            Some(_) => return None,
        };
        let model = tokenizer_json.get("model")?;
        if model.get("type").and_then(Value::as_str) != Some("BPE")
            || !model.get("dropout").is_none_or(Value::is_null)
            || model.get("byte_fallback").and_then(Value::as_bool) == Some(true)
        {
            return None;
        }
        let pre = tokenizer_json.get("pre_tokenizer")?;
        let steps: Vec<&Value> = match pre.get("type").and_then(Value::as_str)? {
            "Sequence" => pre.get("pretokenizers")?.as_array()?.iter().collect(),
            _ => vec![pre],
        };
        let mut splits = Vec::new();
        let mut byte_level = None;
        for (i, step) in steps.iter().enumerate() {
            match step.get("type").and_then(Value::as_str)? {
                "Split" if byte_level.is_none() => {
                    let pattern = step.get("pattern")?.get("Regex")?.as_str()?;
                    if step.get("behavior").and_then(Value::as_str) != Some("Isolated")
                        || step.get("invert").and_then(Value::as_bool) != Some(false)
                    {
                        return None;
                    }
                    splits.push(Regex::new(pattern).ok()?);
                }
                "ByteLevel" if i + 1 == steps.len() => byte_level = Some(*step),
                _ => return None,
            }
        }
        let bl = byte_level?;
        if bl.get("use_regex").and_then(Value::as_bool).unwrap_or(true) {
            splits.push(Regex::new(GPT2).ok()?);
        }
        let add_prefix_space = bl
            .get("add_prefix_space")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let added: Vec<String> = tokenizer_json
            .get("added_tokens")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.get("content").and_then(Value::as_str))
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let added = if added.is_empty() {
            None
        } else {
            Some(AhoCorasick::new(&added).ok()?)
        };
        // What the post-processor puts around a text: the difference between the two encodings
        // of a probe text.
        let with = probe(true)?;
        let without = probe(false)?;
        let at = with
            .windows(without.len())
            .position(|w| w == without.as_slice())?;
        Some(Self {
            splits,
            add_prefix_space,
            nfc,
            byte_char: byte_chars(),
            added,
            prefix: with[..at].to_vec(),
            suffix: with[at + without.len()..].to_vec(),
        })
    }

    /// The probe text [`FastByteLevel::new`]'s `probe` must encode.
    pub const PROBE: &'static str = "Probe text, 12 words.";

    fn pieces<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = vec![text];
        for re in &self.splits {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for p in pieces {
                let mut last = 0;
                for m in re.find_iter(p) {
                    let Ok(m) = m else { return Vec::new() };
                    if m.start() > last {
                        next.push(&p[last..m.start()]);
                    }
                    if m.end() > m.start() {
                        next.push(m.as_str());
                    }
                    last = m.end();
                }
                if last < p.len() {
                    next.push(&p[last..]);
                }
            }
            pieces = next;
        }
        pieces
    }

    /// Ids and each token's start byte in `text` — `tokenizer(text)` with special tokens — or
    /// `None` when this document needs the full pipeline.
    pub fn encode(
        &self,
        model: &impl Model,
        text: &str,
        cache: &mut HashMap<String, Vec<(u32, usize)>>,
    ) -> Option<(Vec<u32>, Vec<usize>)> {
        if self.added.as_ref().is_some_and(|a| a.is_match(text)) {
            return None;
        }
        if self.nfc && is_nfc_quick(text.chars()) != IsNormalized::Yes {
            return None;
        }
        if self.add_prefix_space && !text.starts_with(' ') {
            return None;
        }
        let mut ids = Vec::with_capacity(text.len() / 3 + 4);
        let mut starts = Vec::with_capacity(text.len() / 3 + 4);
        ids.extend(&self.prefix);
        starts.extend(self.prefix.iter().map(|_| 0));
        let mut pos = 0;
        let mut mapped = String::new();
        for piece in self.pieces(text) {
            if !cache.contains_key(piece) {
                mapped.clear();
                mapped.extend(piece.bytes().map(|b| self.byte_char[b as usize]));
                let tokens = model.tokenize(&mapped).ok()?;
                let entry = tokens
                    .into_iter()
                    .map(|t| (t.id, t.value.chars().count()))
                    .collect();
                cache.insert(piece.to_owned(), entry);
            }
            for &(id, len) in &cache[piece] {
                ids.push(id);
                starts.push(pos);
                pos += len;
            }
        }
        if pos != text.len() {
            return None;
        }
        ids.extend(&self.suffix);
        starts.extend(self.suffix.iter().map(|_| text.len()));
        Some((ids, starts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        let t = byte_chars();
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        let distinct: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }
}
