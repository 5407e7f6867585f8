//! The text side of a Hugging Face model folder, shared by generation (`doctune-models`) and the
//! dataset builder:
//!
//! - [`ModelTokenizer`] loads `tokenizer.json` (the fast tokenizer `transformers` uses), the
//!   special tokens of `tokenizer_config.json`, and the stop tokens of `generation_config.json`
//!   (falling back to `config.json`);
//! - [`ChatTemplate`] is the model's own chat template — `chat_template.jinja` (folders saved by
//!   transformers 5) or `chat_template` in `tokenizer_config.json` (a string, or a list of named
//!   templates) — rendered with minijinja configured as transformers configures Jinja
//!   (`trim_blocks`, `lstrip_blocks`, loop controls, Python string methods, `raise_exception`,
//!   and a `tojson` that prints as Python's `json.dumps` does).
//!
//! - [`train`] trains a new byte-level BPE tokenizer on a person's text and writes its files.
//!
//! Every file is size-limited ([`MAX_TOKENIZER_BYTES`], [`MAX_SMALL_FILE_BYTES`]) and every
//! error names the file.

mod template;
pub mod train;

pub use template::{serve_render, ChatTemplate, Message, RENDER_JOB};

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The largest `tokenizer.json` DocTune reads (Gemma's, the largest in common use, is ~34 MB).
pub const MAX_TOKENIZER_BYTES: u64 = 128 * 1024 * 1024;
/// The largest `tokenizer_config.json`, `generation_config.json`, `config.json` or
/// `chat_template.jinja` DocTune reads.
pub const MAX_SMALL_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// What can go wrong reading a model folder's tokenizer files or rendering its template.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{} has no tokenizer.json: DocTune needs the fast tokenizer file (a folder with only tokenizer.model is not supported)", dir.display())]
    Missing { dir: PathBuf },
    #[error("tokenizer: {0}")]
    Tokenize(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("{} has no chat template (neither chat_template.jinja nor chat_template in tokenizer_config.json); use plain prompts", dir.display())]
    NoChatTemplate { dir: PathBuf },
}

type Result<T, E = TokenizerError> = std::result::Result<T, E>;

/// A model folder's tokenizer, special tokens, chat template and stop tokens.
pub struct ModelTokenizer {
    dir: PathBuf,
    tokenizer: tokenizers::Tokenizer,
    bos_token: Option<String>,
    eos_token: Option<String>,
    pad_token: Option<String>,
    unk_token: Option<String>,
    stop_ids: Vec<u32>,
    chat_template: Option<ChatTemplate>,
}

impl std::fmt::Debug for ModelTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTokenizer")
            .field("dir", &self.dir)
            .field("vocab", &self.tokenizer.get_vocab_size(true))
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("stop_ids", &self.stop_ids)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

/// Reads a file of a model folder, at most `limit` bytes, through the folder's scope
/// ([`Scope::of_model_folder`](doctune_core::Scope::of_model_folder): a link out of the folder is
/// refused, a Hub snapshot's links into its blobs are followed); errors name the file.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    doctune_core::Scope::read_model_file(path, limit).map_err(|e| TokenizerError::File {
        path: path.to_path_buf(),
        message: match e {
            doctune_core::ScopeError::Io { source, .. } => source.to_string(),
            other => other.to_string(),
        },
    })
}

/// Parses an optional JSON file of the folder (`None` when absent).
pub fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_limited(path, MAX_SMALL_FILE_BYTES)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| TokenizerError::File {
            path: path.to_path_buf(),
            message: format!("is not valid JSON: {e}"),
        })
}

/// A special token in `tokenizer_config.json`: a string, or an `AddedToken` object.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// `eos_token_id` as an int or a list of ints.
fn ids_of(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| n as u32).into_iter().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    }
}

impl ModelTokenizer {
    /// Loads the tokenizer files of a model folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(TokenizerError::Missing {
                dir: dir.to_path_buf(),
            });
        }
        let bytes = read_limited(&tok_path, MAX_TOKENIZER_BYTES)?;
        // The tokenizers crate panics on some malformed files (a decoder whose JSON is not what
        // it expects: found by the `tokenizer` fuzz target), so a panic is a refusal too.
        let parsed = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(&bytes))
            .unwrap_or_else(|panic| {
                let detail = doctune_core::panic_message(panic.as_ref());
                Err(format!("the tokenizers library failed on it ({detail})").into())
            });
        let tokenizer = parsed.map_err(|e| TokenizerError::File {
            path: tok_path.clone(),
            message: format!("is not a tokenizer DocTune can read: {e}"),
        })?;

        let tcfg_path = dir.join("tokenizer_config.json");
        let tcfg = read_json(&tcfg_path)?.unwrap_or(Value::Null);
        let bos_token = token_text(tcfg.get("bos_token"));
        let eos_token = token_text(tcfg.get("eos_token"));
        let pad_token = token_text(tcfg.get("pad_token"));
        let unk_token = token_text(tcfg.get("unk_token"));

        // Stop tokens: generation_config.json's eos_token_id (what `generate` stops on), else
        // config.json's, plus the tokenizer's EOS token.
        let gen = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
        let mut stop: BTreeSet<u32> = ids_of(gen.get("eos_token_id")).into_iter().collect();
        if stop.is_empty() {
            let cfg = read_json(&dir.join("config.json"))?.unwrap_or(Value::Null);
            stop.extend(ids_of(cfg.get("eos_token_id")));
        }
        if let Some(id) = eos_token.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
            stop.insert(id);
        }

        let jinja = dir.join("chat_template.jinja");
        let source = if jinja.is_file() {
            let bytes = read_limited(&jinja, MAX_SMALL_FILE_BYTES)?;
            Some(String::from_utf8(bytes).map_err(|_| TokenizerError::File {
                path: jinja.clone(),
                message: "is not UTF-8 text".into(),
            })?)
        } else {
            match tcfg.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                // A list of named templates: "default" if there is one, else the first.
                Some(Value::Array(list)) => {
                    let named = |n: &str| {
                        list.iter()
                            .find(|t| t.get("name").and_then(Value::as_str) == Some(n))
                    };
                    named("default")
                        .or_else(|| list.first())
                        .and_then(|t| t.get("template"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                }
                _ => None,
            }
        };
        let specials = template::Specials {
            bos_token: bos_token.clone(),
            eos_token: eos_token.clone(),
            pad_token: pad_token.clone(),
            unk_token: unk_token.clone(),
        };
        let chat_template = source
            .map(|s| ChatTemplate::new(&s, specials))
            .transpose()
            .map_err(|e| match e {
                TokenizerError::Template(m) => TokenizerError::File {
                    path: if jinja.is_file() { jinja } else { tcfg_path },
                    message: format!("chat template does not compile: {m}"),
                },
                other => other,
            })?;

        Ok(Self {
            dir: dir.to_path_buf(),
            tokenizer,
            bos_token,
            eos_token,
            pad_token,
            unk_token,
            stop_ids: stop.into_iter().collect(),
            chat_template,
        })
    }

    /// The folder the tokenizer was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    /// Token ids of `text`. With `add_special_tokens`, as `tokenizer(text)` encodes it in
    /// transformers (the post-processor adds BOS where the model wants it); without, as
    /// `apply_chat_template` encodes a rendered conversation.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Tokenize(e.to_string()))
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Tokenize(e.to_string()))
    }

    /// Decodes token by token for streaming: each step yields the text that is complete so far
    /// (nothing while a multi-byte character is still split across tokens).
    pub fn decode_stream(&self, skip_special_tokens: bool) -> TokenStream<'_> {
        TokenStream {
            tokenizer: self,
            ids: Vec::new(),
            emitted: 0,
            skip_special_tokens,
        }
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }
    pub fn pad_token(&self) -> Option<&str> {
        self.pad_token.as_deref()
    }
    pub fn unk_token(&self) -> Option<&str> {
        self.unk_token.as_deref()
    }

    /// The ids generation stops on.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The model's chat template, if it has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// The chat template, or an error that says the folder has none.
    pub fn require_chat_template(&self) -> Result<&ChatTemplate> {
        self.chat_template
            .as_ref()
            .ok_or_else(|| TokenizerError::NoChatTemplate {
                dir: self.dir.clone(),
            })
    }

    /// Strings that end a reply: the text of every stop token, and in chat mode the template's
    /// end-of-turn marker (`<|eot_id|>`, `<|im_end|>`, `<end_of_turn>`, …).
    pub fn stop_strings(&self, chat: bool) -> Vec<String> {
        let mut out: BTreeSet<String> = self
            .stop_ids
            .iter()
            .filter_map(|&id| self.tokenizer.id_to_token(id))
            .filter(|s| !s.is_empty())
            .collect();
        if chat {
            if let Some(marker) = self.chat_template.as_ref().and_then(|t| t.end_of_turn()) {
                out.insert(marker);
            }
        }
        out.into_iter().collect()
    }
}

/// Incremental decoding (see [`ModelTokenizer::decode_stream`]). Each step decodes all ids so
/// far, so the pieces always add up to exactly `decode(ids)`; text is held back while it ends in
/// an incomplete UTF-8 sequence (a trailing U+FFFD).
#[derive(Debug)]
pub struct TokenStream<'a> {
    tokenizer: &'a ModelTokenizer,
    ids: Vec<u32>,
    emitted: usize,
    skip_special_tokens: bool,
}

impl TokenStream<'_> {
    /// Adds one token; returns the new complete text, if any.
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = self.text()?;
        if text.ends_with('\u{FFFD}')
            || text.len() <= self.emitted
            || !text.is_char_boundary(self.emitted)
        {
            return Ok(None);
        }
        let piece = text[self.emitted..].to_owned();
        self.emitted = text.len();
        Ok(Some(piece))
    }

    /// Everything decoded so far.
    pub fn text(&self) -> Result<String> {
        self.tokenizer.decode(&self.ids, self.skip_special_tokens)
    }
}
