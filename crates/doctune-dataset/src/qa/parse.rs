//! A generator model's reply read into question–answer pairs.
//!
//! The prompt asks for `Q: …` / `A: …` lines. Models also answer with numbering, Markdown
//! emphasis, `Question:`/`Answer:` labels, a JSON array (in a code fence or not) or a preamble;
//! all of those are read. What cannot be read is an error ([`ReplyError`]) the caller counts
//! and retries once; a question without an answer is dropped and counted in [`Parsed`].

/// One pair as the model wrote it (trimmed; labels and emphasis removed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QaPair {
    pub question: String,
    pub answer: String,
}

/// The pairs read from a reply, and how many questions or answers had no partner or were
/// outside the length limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub pairs: Vec<QaPair>,
    pub dropped: usize,
}

/// Why no pair could be read from a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the reply is empty")]
    Empty,
    #[error("the reply has no question–answer pair in a form DocTune reads")]
    NoPairs,
}

/// The longest question and answer kept (characters); longer ones are a model rambling.
pub const MAX_QUESTION_CHARS: usize = 400;
pub const MAX_ANSWER_CHARS: usize = 2_000;

/// Reads `reply`.
pub fn parse_reply(reply: &str) -> Result<Parsed, ReplyError> {
    let reply = without_thinking(reply).trim();
    if reply.is_empty() {
        return Err(ReplyError::Empty);
    }
    let mut parsed = json_pairs(reply).unwrap_or_else(|| labelled_pairs(reply));
    let before = parsed.pairs.len();
    parsed.pairs.retain(|p| {
        !p.question.is_empty()
            && !p.answer.is_empty()
            && p.question.chars().count() <= MAX_QUESTION_CHARS
            && p.answer.chars().count() <= MAX_ANSWER_CHARS
    });
    parsed.dropped += before - parsed.pairs.len();
    if parsed.pairs.is_empty() {
        return Err(ReplyError::NoPairs);
    }
    Ok(parsed)
}

/// The reply after a reasoning model's `<think>…</think>` block (nothing when the block never
/// closes: the model ran out of tokens while thinking).
fn without_thinking(reply: &str) -> &str {
    match (reply.find("<think>"), reply.rfind("</think>")) {
        (_, Some(end)) => &reply[end + "</think>".len()..],
        (Some(start), None) => &reply[..start],
        (None, None) => reply,
    }
}

/// A JSON array of objects with question/answer keys (also `q`/`a`, `instruction`/`output`),
/// anywhere in the reply (a code fence, a preamble before it).
fn json_pairs(reply: &str) -> Option<Parsed> {
    let start = reply.find('[')?;
    let end = reply.rfind(']')?;
    if end <= start {
        return None;
    }
    let items: Vec<serde_json::Value> = serde_json::from_str(&reply[start..=end]).ok()?;
    let mut out = Parsed::default();
    let field = |v: &serde_json::Value, keys: &[&str]| {
        keys.iter()
            .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
            .map(|s| s.trim().to_string())
    };
    for v in &items {
        match (
            field(v, &["question", "q", "instruction", "Question"]),
            field(v, &["answer", "a", "output", "Answer"]),
        ) {
            (Some(question), Some(answer)) => out.pairs.push(QaPair { question, answer }),
            _ => out.dropped += 1,
        }
    }
    (!out.pairs.is_empty() || out.dropped > 0).then_some(out)
}

#[derive(PartialEq)]
enum Label {
    Q,
    A,
}

/// The label a line starts with, and the rest of the line: `Q:`, `Q1:`, `Question:`,
/// `Question 2:`, `A:`, `Answer:`, after list markers (`1.`, `-`, `*`) and Markdown emphasis.
fn label(line: &str) -> Option<(Label, &str)> {
    let (kind, mut rest) = one_label(line)?;
    // "Q: Q: …": the same label repeated.
    while let Some((_, r)) = one_label(rest).filter(|(k, _)| *k == kind) {
        rest = r;
    }
    Some((kind, rest))
}

fn one_label(line: &str) -> Option<(Label, &str)> {
    let mut l = line.trim_start();
    // List markers and numbering.
    l = l.trim_start_matches(|c: char| {
        c == '-' || c == '*' || c == '#' || c == '>' || c.is_whitespace()
    });
    let digits = l.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits > 0 && l[digits..].starts_with(['.', ')']) {
        l = l[digits + 1..].trim_start();
    }
    l = l.trim_start_matches(['*', '_']);
    let lower = l.to_ascii_lowercase();
    let (kind, rest) = if lower.starts_with("question") {
        (Label::Q, &l[8..])
    } else if lower.starts_with("answer") {
        (Label::A, &l[6..])
    } else if lower.starts_with('q') {
        (Label::Q, &l[1..])
    } else if lower.starts_with('a') {
        (Label::A, &l[1..])
    } else {
        return None;
    };
    // An optional number, emphasis, then the colon.
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
    let rest = rest.trim_start_matches(['*', '_']);
    let rest = rest.strip_prefix(':').or_else(|| rest.strip_prefix('.'))?;
    Some((kind, rest.trim_start_matches(['*', '_']).trim()))
}

fn labelled_pairs(reply: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut q: Option<String> = None;
    let mut a: Option<String> = None;
    let flush = |q: &mut Option<String>, a: &mut Option<String>, out: &mut Parsed| match (
        q.take(),
        a.take(),
    ) {
        (Some(question), Some(answer)) => out.pairs.push(QaPair {
            question: clean(&question),
            answer: clean(&answer),
        }),
        (None, None) => {}
        _ => out.dropped += 1,
    };
    for line in reply.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            continue;
        }
        match label(line) {
            Some((Label::Q, rest)) => {
                flush(&mut q, &mut a, &mut out);
                q = Some(rest.to_string());
            }
            Some((Label::A, rest)) if q.is_some() && a.is_none() => a = Some(rest.to_string()),
            Some((Label::A, _)) => out.dropped += 1,
            // A continuation line of the answer (or of the question before its answer).
            None if !t.is_empty() => {
                if let Some(a) = a.as_mut() {
                    a.push('\n');
                    a.push_str(t);
                } else if let Some(q) = q.as_mut() {
                    q.push(' ');
                    q.push_str(t);
                }
            }
            None => {}
        }
    }
    flush(&mut q, &mut a, &mut out);
    out
}

/// Surrounding quotes and emphasis removed.
fn clean(s: &str) -> String {
    s.trim()
        .trim_matches(|c: char| c == '"' || c == '“' || c == '”' || c == '*' || c == '_')
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qs(r: &str) -> Vec<(String, String)> {
        parse_reply(r)
            .unwrap()
            .pairs
            .into_iter()
            .map(|p| (p.question, p.answer))
            .collect()
    }

    #[test]
    fn the_asked_format_and_its_common_variations_are_read() {
        let want = vec![
            (
                "What is LoRA?".to_string(),
                "A low-rank adapter.".to_string(),
            ),
            (
                "Where are runs kept?".to_string(),
                "In the project folder.".to_string(),
            ),
        ];
        for reply in [
            "Q: What is LoRA?\nA: A low-rank adapter.\nQ: Where are runs kept?\nA: In the project folder.",
            "Here are two pairs:\n\n1. Q: What is LoRA?\n   A: A low-rank adapter.\n2. Q: Where are runs kept?\n   A: In the project folder.\n",
            "**Question 1:** What is LoRA?\n**Answer:** A low-rank adapter.\n\n**Question 2:** Where are runs kept?\n**Answer:** In the project folder.",
            "- Q1: \"What is LoRA?\"\n- A1: \"A low-rank adapter.\"\n- Q2: Where are runs kept?\n- A2: In the project folder.",
            "```json\n[{\"question\": \"What is LoRA?\", \"answer\": \"A low-rank adapter.\"}, {\"q\": \"Where are runs kept?\", \"a\": \"In the project folder.\"}]\n```",
        ] {
            assert_eq!(qs(reply), want, "{reply}");
        }
    }

    #[test]
    fn answers_may_span_lines_and_unpartnered_lines_are_counted() {
        let p = parse_reply("Q: How is a run resumed?\nA: From its last checkpoint.\nIt keeps the optimiser state.\nQ: What is missing?\nQ: Is this kept?\nA: Yes.\nA: stray answer").unwrap();
        assert_eq!(p.pairs.len(), 2);
        assert_eq!(
            p.pairs[0].answer,
            "From its last checkpoint.\nIt keeps the optimiser state."
        );
        assert_eq!(p.pairs[1].question, "Is this kept?");
        assert_eq!(p.dropped, 2);
    }

    #[test]
    fn replies_without_pairs_are_errors_not_panics() {
        assert_eq!(parse_reply("  \n"), Err(ReplyError::Empty));
        for bad in [
            "I cannot help with that.",
            "Q:\nA:",
            "[1, 2, 3]",
            "[{\"question\": \"only a question\"}]",
            "A: an answer without a question",
            "[{\"question\": ",
            "Q: ünïcödé ✓ and no answer",
            &format!("Q: {}?\nA: yes", "x".repeat(MAX_QUESTION_CHARS + 1)),
            "\u{0}\u{1}Q\u{2}:",
            "Quite so.\nAbsolutely.",
        ] {
            assert_eq!(parse_reply(bad), Err(ReplyError::NoPairs), "{bad:?}");
        }
    }
}
