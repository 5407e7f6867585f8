//! What the generator model is asked: the pairs prompt, the one retry after a reply that could
//! not be read, and the support check. [`PROMPT_VERSION`] is part of every cache key, so
//! changing a prompt here never serves replies to the old one.

use super::passages::Passage;
use doctune_tokenizer::Message;

/// Bumped whenever a prompt below changes.
pub const PROMPT_VERSION: u32 = 1;

const SYSTEM: &str = "You write question-answer pairs that help someone study a document. \
Use only facts stated in the passage you are given; never add outside knowledge.";

fn quoted(p: &Passage) -> String {
    let place = match &p.section {
        Some(s) => format!(
            "from \u{201c}{}\u{201d}, section \u{201c}{s}\u{201d}",
            p.doc
        ),
        None => format!("from \u{201c}{}\u{201d}", p.doc),
    };
    format!("Passage ({place}):\n\"\"\"\n{}\n\"\"\"", p.text)
}

/// The conversation that asks for `k` pairs about `p`.
pub fn pairs_prompt(p: &Passage, k: usize) -> Vec<Message> {
    let plural = if k == 1 { "question" } else { "questions" };
    vec![
        Message::new("system", SYSTEM),
        Message::new(
            "user",
            &format!(
                "{}\n\nWrite {k} {plural} a reader could ask about this passage, each with its \
                 answer taken from the passage. Write each pair as two lines:\nQ: <question>\n\
                 A: <answer>\nWrite nothing else.",
                quoted(p)
            ),
        ),
    ]
}

/// The same conversation with the unreadable reply and a stricter reminder, for the one retry.
pub fn retry_prompt(p: &Passage, k: usize, bad_reply: &str) -> Vec<Message> {
    let mut m = pairs_prompt(p, k);
    let pairs = if k == 1 { "pair" } else { "pairs" };
    m.push(Message::new("assistant", bad_reply));
    m.push(Message::new(
        "user",
        &format!(
            "That reply could not be read. Write exactly {k} {pairs}. Each pair is a line that \
             starts with \"Q: \" followed by a line that starts with \"A: \". No numbering, no \
             other text."
        ),
    ));
    m
}

/// The conversation that asks whether `p` supports `answer` to `question`.
pub fn check_prompt(p: &Passage, question: &str, answer: &str) -> Vec<Message> {
    vec![
        Message::new("system", SYSTEM),
        Message::new(
            "user",
            &format!(
                "{}\n\nQuestion: {question}\nAnswer: {answer}\n\nDoes the passage state what the \
                 answer says? Reply with one word: yes or no.",
                quoted(p)
            ),
        ),
    ]
}

/// A support verdict: `Some(true)` for yes, `Some(false)` for no, `None` when the reply is
/// neither (an unclear verdict does not confirm the pair).
pub fn read_verdict(reply: &str) -> Option<bool> {
    let first = reply
        .trim_start()
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .split(|c: char| !c.is_alphanumeric())
        .next()?
        .to_lowercase();
    match first.as_str() {
        "yes" | "supported" | "true" | "correct" => Some(true),
        "no" | "not" | "unsupported" | "false" | "incorrect" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage() -> Passage {
        Passage {
            doc: "guide.md".into(),
            section: Some("Checkpoints".into()),
            start: 0,
            end: 10,
            text: "Checkpoints are written atomically.".into(),
            tokens: 5,
        }
    }

    #[test]
    fn the_prompt_quotes_the_passage_and_names_its_place() {
        let m = pairs_prompt(&passage(), 3);
        assert_eq!(m[0].role, "system");
        assert!(m[1].content.contains("Checkpoints are written atomically."));
        assert!(m[1].content.contains("\u{201c}guide.md\u{201d}, section"));
        assert!(m[1].content.contains("Write 3 questions"));
        let r = retry_prompt(&passage(), 1, "gibberish");
        assert_eq!(r.len(), 4);
        assert_eq!(r[2].content, "gibberish");
        assert!(r[3].content.contains("exactly 1 pair."));
    }

    #[test]
    fn verdicts_are_read_from_the_first_word() {
        assert_eq!(read_verdict("Yes."), Some(true));
        assert_eq!(
            read_verdict("  **No**, the passage says otherwise"),
            Some(false)
        );
        assert_eq!(read_verdict("Not supported"), Some(false));
        assert_eq!(read_verdict("The answer is fine"), None);
        assert_eq!(read_verdict(""), None);
    }
}
