//! The Ollama `Modelfile` beside a GGUF export: `FROM` the GGUF, a `TEMPLATE` (Go
//! `text/template`, as Ollama renders it) that reproduces the model's own chat template, the
//! stop tokens of its chat format — the end-of-turn marker, not only end-of-text, so generation
//! ends where the model's turn does — and `SYSTEM` when the user set one.
//!
//! The template is derived from the model's chat template itself: the template is rendered for
//! probe conversations, the text it puts around each message is read off, and a Go template of
//! the model's chat format (Llama 3, ChatML/Qwen, Phi-3, Gemma, Mistral) is filled with it —
//! default system prompts (Qwen 2.5's, Llama 3.1's date block) included. The tests render it
//! with a Go-template engine and compare with the model's template, for every format.

use crate::source::Source;
use crate::{io, ExportError};
use doctune_tokenizer::{ChatTemplate, Message, ModelTokenizer};
use std::fmt::Write as _;
use std::path::Path;

pub const MODELFILE: &str = "Modelfile";

/// A chat format Ollama templates are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Llama3,
    ChatMl,
    Phi3,
    Gemma,
    Mistral,
}

impl Style {
    fn detect(text: &str) -> Option<Style> {
        Some(if text.contains("<|start_header_id|>") {
            Style::Llama3
        } else if text.contains("<|im_start|>") {
            Style::ChatMl
        } else if text.contains("<|user|>") && text.contains("<|end|>") {
            Style::Phi3
        } else if text.contains("<start_of_turn>") {
            Style::Gemma
        } else if text.contains("[INST]") {
            Style::Mistral
        } else {
            return None;
        })
    }

    /// The tokens that must stop generation in this format.
    fn stops(self) -> &'static [&'static str] {
        match self {
            Style::Llama3 => &["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
            Style::ChatMl => &["<|im_start|>", "<|im_end|>"],
            Style::Phi3 => &["<|end|>", "<|user|>", "<|assistant|>", "<|system|>"],
            Style::Gemma => &["<start_of_turn>", "<end_of_turn>"],
            Style::Mistral => &["[INST]", "[/INST]", "</s>"],
        }
    }
}

/// A Modelfile's template and stop words.
#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    pub style: Option<Style>,
    pub template: String,
    pub stops: Vec<String>,
}

const U1: &str = "DOCTUNEUSERONE";
const A1: &str = "DOCTUNEASSISTANTONE";
const U2: &str = "DOCTUNEUSERTWO";
const S0: &str = "DOCTUNESYSTEM";

fn cut<'a>(text: &'a str, from: &str, to: &str) -> Option<&'a str> {
    let a = text.find(from)? + from.len();
    let b = a + text[a..].find(to)?;
    Some(&text[a..b])
}

/// Go template text that prints `s` literally (a `{{` in it would start an action).
fn lit(s: &str) -> String {
    s.replace("{{", "{{ \"{{\" }}")
}

/// Splits the text between two messages into the first one's suffix and the second one's
/// prefix: the suffix runs through the end-of-turn marker and the newlines after it.
fn split_at_marker<'a>(between: &'a str, marker: &str) -> Option<(&'a str, &'a str)> {
    let at = between.find(marker)? + marker.len();
    let rest = &between[at..];
    let nl = rest.len() - rest.trim_start_matches('\n').len();
    Some(between.split_at(at + nl))
}

/// The template and stops for `tmpl` (the model's chat template); `bos` is the BOS text the
/// tokenizer adds by itself (llama.cpp adds it; the TEMPLATE must not repeat it).
pub fn chat_for(
    tmpl: &ChatTemplate,
    bos: Option<&str>,
    eos: Option<&str>,
) -> Result<Chat, ExportError> {
    let unsupported = |why: &str| {
        ExportError::Unsupported(format!(
            "the model's chat template cannot be translated for Ollama: {why}"
        ))
    };
    let convo = [
        Message::new("user", U1),
        Message::new("assistant", A1),
        Message::new("user", U2),
    ];
    let plain = tmpl
        .render(&convo, true)
        .map_err(|e| unsupported(&e.to_string()))?;
    let with_sys = {
        let mut m = vec![Message::new("system", S0)];
        m.extend(convo.iter().cloned());
        tmpl.render(&m, true).ok()
    };
    let style = Style::detect(&plain)
        .ok_or_else(|| unsupported("not a Llama 3, ChatML, Phi-3, Gemma or Mistral format"))?;
    let strip_bos = |s: &str| -> String {
        match bos {
            Some(b) if !b.is_empty() && s.starts_with(b) => s[b.len()..].to_string(),
            _ => s.to_string(),
        }
    };
    let head_u = plain
        .find(U1)
        .map(|i| strip_bos(&plain[..i]))
        .ok_or_else(|| unsupported("the user's message does not appear"))?;
    let ua = cut(&plain, U1, A1).ok_or_else(|| unsupported("no reply"))?;
    let au = cut(&plain, A1, U2).ok_or_else(|| unsupported("no second turn"))?;
    let tail = &plain[plain.find(U2).expect("rendered") + U2.len()..];

    let template = match style {
        Style::Mistral => {
            // [INST] user[/INST] reply</s>[INST] system\n\nlast user[/INST]
            let user_end = "[/INST]";
            let asst_pre = ua
                .strip_prefix(user_end)
                .ok_or_else(|| unsupported("unexpected Mistral turn layout"))?;
            let asst_end = au
                .find("[INST]")
                .map(|i| &au[..i])
                .ok_or_else(|| unsupported("unexpected Mistral turn layout"))?;
            let user_pre = &au[asst_end.len()..];
            let head = head_u
                .strip_suffix(user_pre)
                .ok_or_else(|| unsupported("unexpected Mistral start"))?;
            // Where the system message goes: before the last user message, joined by what
            // separates them.
            let joiner = with_sys
                .as_deref()
                .and_then(|t| cut(t, S0, U2))
                .unwrap_or("\n\n");
            format!(
                "{}{{{{ range $i, $m := .Messages }}}}{{{{ if eq .Role \"user\" }}}}{}{{{{ if and $.System (eq (len (slice $.Messages $i)) 1) }}}}{{{{ $.System }}}}{}{{{{ end }}}}{{{{ .Content }}}}{}{{{{ else if eq .Role \"assistant\" }}}}{}{{{{ .Content }}}}{}{{{{ end }}}}{{{{ end }}}}",
                lit(head),
                lit(user_pre),
                lit(joiner),
                lit(user_end),
                lit(asst_pre),
                lit(asst_end),
            )
        }
        _ => {
            let marker = match style {
                Style::Llama3 => "<|eot_id|>",
                Style::ChatMl => "<|im_end|>",
                Style::Phi3 => "<|end|>",
                Style::Gemma => "<end_of_turn>",
                Style::Mistral => unreachable!(),
            };
            let (user_suf, asst_pre) =
                split_at_marker(ua, marker).ok_or_else(|| unsupported("no end-of-turn marker"))?;
            let (asst_suf, user_pre) =
                split_at_marker(au, marker).ok_or_else(|| unsupported("no end-of-turn marker"))?;
            let gen = tail
                .strip_prefix(user_suf)
                .ok_or_else(|| unsupported("the last turn ends differently"))?;
            let default_head = head_u
                .strip_suffix(user_pre)
                .ok_or_else(|| unsupported("the first turn starts differently"))?;
            // The system turn, when the template has one.
            let system = with_sys.as_deref().and_then(|t| {
                let pre = strip_bos(&t[..t.find(S0)?]);
                let between = cut(t, S0, U1)?;
                let suf = between.strip_suffix(user_pre)?;
                Some((pre, suf.to_string()))
            });
            let mut t = String::new();
            match (&system, style) {
                (Some((pre, suf)), _) => {
                    let _ = write!(
                        t,
                        "{{{{ if .System }}}}{}{{{{ .System }}}}{}{{{{ else }}}}{}{{{{ end }}}}",
                        lit(pre),
                        lit(suf),
                        lit(default_head)
                    );
                }
                (None, _) => t.push_str(&lit(default_head)),
            }
            // Gemma has no system turn: a system message opens the first user message.
            let sys_in_user = if system.is_none() {
                "{{ if and $.System (eq $i 1) }}{{ $.System }}\n\n{{ end }}"
            } else {
                ""
            };
            let _ = write!(
                t,
                "{{{{ range $i, $m := .Messages }}}}{{{{ if eq .Role \"user\" }}}}{}{}{{{{ .Content }}}}{}{{{{ else if eq .Role \"assistant\" }}}}{}{{{{ .Content }}}}{}{{{{ end }}}}{{{{ end }}}}{}",
                lit(user_pre),
                sys_in_user,
                lit(user_suf),
                lit(asst_pre),
                lit(asst_suf),
                lit(gen)
            );
            t
        }
    };
    let mut stops: Vec<String> = style.stops().iter().map(|s| s.to_string()).collect();
    if let Some(marker) = tmpl.end_of_turn() {
        if !stops.contains(&marker) {
            stops.push(marker);
        }
    }
    if let Some(e) = eos.filter(|e| !e.is_empty()) {
        if !stops.iter().any(|s| s == e) {
            stops.push(e.to_string());
        }
    }
    Ok(Chat {
        style: Some(style),
        template,
        stops,
    })
}

/// The template for a model without a chat template: the prompt as is, stopping at EOS.
fn plain_chat(tok: &ModelTokenizer) -> Chat {
    Chat {
        style: None,
        template: "{{ .Prompt }}".into(),
        stops: tok.eos_token().map(str::to_owned).into_iter().collect(),
    }
}

/// The chat format of a tokenizer (the plain prompt when it has no chat template).
pub fn chat_of(tok: &ModelTokenizer) -> Result<Chat, ExportError> {
    let adds_bos = tok.encode("a", true)? != tok.encode("a", false)?;
    match tok.chat_template() {
        Some(t) => chat_for(t, tok.bos_token().filter(|_| adds_bos), tok.eos_token()),
        None => Ok(plain_chat(tok)),
    }
}

/// A name `ollama create` accepts, from the export folder's name.
pub fn model_name(folder: &str) -> String {
    let s: String = folder
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches(['-', '.', '_']).to_string();
    if s.is_empty() {
        "doctune-model".into()
    } else {
        s
    }
}

/// A Modelfile's quoted value (`"""…"""` when it has quotes or newlines).
fn quoted(s: &str) -> Result<String, ExportError> {
    if s.contains("\"\"\"") {
        return Err(ExportError::Invalid(
            "a system message or template cannot contain \"\"\" in a Modelfile".into(),
        ));
    }
    Ok(format!("\"\"\"{s}\"\"\""))
}

/// The Modelfile's text.
pub fn render(gguf_file: &str, chat: &Chat, system: Option<&str>) -> Result<String, ExportError> {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "# Written by DocTune. Create the model with: ollama create NAME -f Modelfile"
    );
    let _ = writeln!(m, "FROM ./{gguf_file}");
    let _ = writeln!(m, "TEMPLATE {}", quoted(&chat.template)?);
    for s in &chat.stops {
        let _ = writeln!(
            m,
            "PARAMETER stop {}",
            serde_json::to_string(s).unwrap_or_default()
        );
    }
    if let Some(sys) = system.filter(|s| !s.trim().is_empty()) {
        let _ = writeln!(m, "SYSTEM {}", quoted(sys)?);
    }
    Ok(m)
}

pub(crate) fn write(
    dir: &Path,
    gguf_file: &str,
    src: &Source,
    system: Option<&str>,
) -> Result<(), ExportError> {
    let chat = chat_of(&src.tokenizer)?;
    let p = dir.join(MODELFILE);
    doctune_core::write_atomic(&p, render(gguf_file, &chat, system)?.as_bytes()).map_err(io(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_quotes() {
        assert_eq!(model_name("Lab Handbook (v2)"), "lab-handbook--v2");
        assert_eq!(model_name("..."), "doctune-model");
        assert!(quoted("a\"\"\"b").is_err());
        let chat = Chat {
            style: None,
            template: "{{ .Prompt }}".into(),
            stops: vec!["<|im_end|>".into()],
        };
        let m = render("m-Q4_K_M.gguf", &chat, Some("Be brief.")).unwrap();
        assert!(m.contains("FROM ./m-Q4_K_M.gguf\n"));
        assert!(m.contains("PARAMETER stop \"<|im_end|>\"\n"));
        assert!(m.contains("SYSTEM \"\"\"Be brief.\"\"\"\n"));
    }
}
