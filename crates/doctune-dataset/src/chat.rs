//! Conversations rendered with the model's own chat template, and the character spans of what
//! the model is trained to say.
//!
//! The whole conversation is rendered once, exactly as `apply_chat_template(messages,
//! tokenize=False)` renders it; that string is what gets tokenised (without adding special
//! tokens, as `apply_chat_template(tokenize=True)` does). For each assistant turn the trained
//! span starts where the template's generation prompt ends — found by rendering the messages
//! before it with `add_generation_prompt=True`, which must be a prefix of the whole — and ends
//! where the rendering up to and including that turn stops agreeing with the whole; so the span
//! covers the reply and the template's end-of-turn marker (the model learns to stop), and never
//! the next turn's header. Templates for which the prefixes do not agree (Mistral's puts the
//! system message into the *last* user turn) fall back to locating each reply's text in order
//! and extending it over the end-of-turn marker.

use doctune_tokenizer::{ChatTemplate, Message};

/// A `[start, end)` range of characters (Unicode scalar values) of a rendered text.
pub type Span = (usize, usize);

/// The rendered conversation and the byte spans of its assistant turns.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub text: String,
    /// Byte ranges of `text` the model is trained on.
    pub spans: Vec<(usize, usize)>,
}

fn common_prefix(a: &str, b: &str) -> usize {
    let mut n = 0;
    for ((i, ca), cb) in a.char_indices().zip(b.chars()) {
        if ca != cb {
            return i;
        }
        n = i + ca.len_utf8();
    }
    n
}

/// Renders `messages` and finds the assistant spans. Errors are the template's own (a template
/// may refuse a conversation, e.g. Gemma's refuses a system message) or say that a reply could
/// not be located in the rendering.
pub fn render(template: &ChatTemplate, messages: &[Message]) -> Result<Rendered, String> {
    let text = template
        .render(messages, false)
        .map_err(|e| e.to_string())?;
    let mut spans = Vec::new();
    let mut prefix_ok = true;
    for (i, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let before = template
            .render(&messages[..i], true)
            .map_err(|e| e.to_string())?;
        if !text.starts_with(&before) {
            prefix_ok = false;
            break;
        }
        let upto = template
            .render(&messages[..=i], false)
            .map_err(|e| e.to_string())?;
        let end = common_prefix(&upto, &text);
        if end <= before.len() {
            prefix_ok = false;
            break;
        }
        spans.push((before.len(), end));
    }
    if !prefix_ok {
        spans = locate(template, &text, messages)?;
    }
    Ok(Rendered { text, spans })
}

/// The fallback: each reply's (trimmed) text found in order, extended over the end-of-turn
/// marker when it follows.
fn locate(
    template: &ChatTemplate,
    text: &str,
    messages: &[Message],
) -> Result<Vec<(usize, usize)>, String> {
    let marker = template.end_of_turn();
    let mut spans = Vec::new();
    let mut from = 0;
    for m in messages {
        let needle = m.content.trim();
        if m.role != "assistant" || needle.is_empty() {
            continue;
        }
        let Some(pos) = text[from..].find(needle) else {
            return Err("the chat template changes the assistant's reply, so its tokens cannot be located for the loss mask".into());
        };
        let start = from + pos;
        let mut end = start + needle.len();
        if let Some(mk) = &marker {
            let rest = &text[end..];
            let ws = rest.len() - rest.trim_start().len();
            if rest[ws..].starts_with(mk.as_str()) {
                end += ws + mk.len();
            }
        }
        spans.push((start, end));
        from = end;
    }
    Ok(spans)
}

/// Byte spans → character spans.
pub fn char_spans(text: &str, spans: &[(usize, usize)]) -> Vec<Span> {
    let to_char = |b: usize| text[..b].chars().count();
    spans
        .iter()
        .map(|&(s, e)| (to_char(s), to_char(e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn spans_cover_replies_and_their_end_marker() {
        let t = ChatTemplate::from_source(CHATML, None, None).unwrap();
        let msgs = [
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello"),
            Message::new("user", "Bye"),
            Message::new("assistant", "Ciao"),
        ];
        let r = render(&t, &msgs).unwrap();
        let got: Vec<&str> = r.spans.iter().map(|&(s, e)| &r.text[s..e]).collect();
        assert_eq!(got, ["Hello<|im_end|>\n", "Ciao<|im_end|>\n"]);
    }

    #[test]
    fn non_prefix_templates_fall_back_to_locating_replies() {
        // System message moved into the last user turn (as Mistral's template does).
        let src = "{% set sys = messages[0]['content'] %}{% for m in messages[1:] %}{% if m.role == 'user' %}[INST] {% if loop.last %}{{ sys }} {% endif %}{{ m.content }}[/INST]{% else %} {{ m.content }}</s>{% endif %}{% endfor %}";
        let t = ChatTemplate::from_source(src, None, None).unwrap();
        let msgs = [
            Message::new("system", "S"),
            Message::new("user", "A"),
            Message::new("assistant", "B"),
            Message::new("user", "C"),
            Message::new("assistant", "D"),
        ];
        let r = render(&t, &msgs).unwrap();
        let got: Vec<&str> = r.spans.iter().map(|&(s, e)| &r.text[s..e]).collect();
        assert_eq!(got, ["B</s>", "D</s>"]);
    }

    #[test]
    fn char_spans_count_characters() {
        assert_eq!(char_spans("é🙂ab", &[(6, 8)]), vec![(2, 4)]);
    }
}
