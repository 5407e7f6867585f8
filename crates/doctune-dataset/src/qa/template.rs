//! Pairs made without a model, for machines that cannot run a generator: questions from
//! definitions ("X is …" → "What is X?") and from headings ("What does the section “Y” say about
//! Z?"). Every answer is a sentence of the passage, so it is grounded by construction.

use super::ground::content_words;
use super::passages::Passage;

/// How a template pair was made (the build report counts each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TemplateKind {
    Definition,
    Heading,
}

/// A template pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplatePair {
    pub kind: TemplateKind,
    pub question: String,
    pub answer: String,
}

/// The verbs a definition uses, and the question each gives.
const DEFINERS: &[(&str, &str)] = &[
    (" is ", "What is"),
    (" are ", "What are"),
    (" means ", "What does {} mean"),
    (" refers to ", "What does {} refer to"),
];

/// Words after "is"/"are" that make a sentence a statement, not a definition: irregular past
/// participles (regular ones end in -ed) and adverbs.
const NOT_DEFINING: &[&str] = &[
    "kept",
    "written",
    "made",
    "done",
    "shown",
    "given",
    "known",
    "found",
    "built",
    "held",
    "seen",
    "taken",
    "set",
    "run",
    "read",
    "sent",
    "put",
    "left",
    "cut",
    "split",
    "not",
    "never",
    "also",
    "often",
    "always",
    "usually",
    "only",
    "now",
    "then",
    "still",
    "already",
    "very",
    "too",
    "so",
    "being",
    "about",
    "available",
    "able",
    "possible",
];

/// Template pairs of one passage: a definition question for each sentence that defines a short
/// subject, and one heading question when the passage has a heading-like section.
pub fn template_pairs(p: &Passage) -> Vec<TemplatePair> {
    let mut out = Vec::new();
    for sentence in sentences(&p.text) {
        if let Some(q) = definition_question(sentence) {
            out.push(TemplatePair {
                kind: TemplateKind::Definition,
                question: q,
                answer: sentence.to_string(),
            });
        }
    }
    if let Some(label) = p
        .section
        .as_deref()
        .filter(|l| !l.starts_with("page ") && !l.trim().is_empty())
    {
        let heading: Vec<String> = content_words(label);
        // The passage's most frequent content word that is not in the heading (nor an adverb):
        // what it is about. A word said only once is no topic: then the question asks what the
        // section says, answered by its first sentences.
        let mut counts: Vec<(String, usize)> = Vec::new();
        for w in content_words(&p.text)
            .into_iter()
            .filter(|w| !heading.contains(w) && !w.ends_with("ly"))
        {
            match counts.iter_mut().find(|(x, _)| *x == w) {
                Some((_, n)) => *n += 1,
                None => counts.push((w, 1)),
            }
        }
        // The first of the most frequent (max_by_key would keep the last).
        let best = counts.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let topic = counts.iter().find(|(_, n)| *n == best && best >= 2);
        let body: Vec<&str> = sentences(&p.text)
            .filter(|s| s.trim() != label.trim())
            .collect();
        let (question, answer) = match topic {
            Some((topic, _)) => {
                // The topic as written in the passage (the first word that folds to it).
                let shown = p
                    .text
                    .split(|c: char| !c.is_alphanumeric())
                    .find(|w| content_words(w).first() == Some(topic))
                    .unwrap_or(topic);
                let answer: Vec<&str> = body
                    .iter()
                    .copied()
                    .filter(|s| content_words(s).contains(topic))
                    .take(2)
                    .collect();
                (
                    format!(
                        "What does the section “{}” say about {}?",
                        label.trim(),
                        shown.to_lowercase()
                    ),
                    answer,
                )
            }
            None => (
                format!("What does the section “{}” say?", label.trim()),
                body.into_iter().take(2).collect(),
            ),
        };
        if !answer.is_empty() {
            out.push(TemplatePair {
                kind: TemplateKind::Heading,
                question,
                answer: answer.join(" "),
            });
        }
    }
    out
}

/// The sentences of `text` (split after `.`, `!`, `?` before whitespace, and at blank lines).
fn sentences(text: &str) -> impl Iterator<Item = &str> {
    text.split("\n\n").flat_map(|para| {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, c) in para.char_indices() {
            let end = i + c.len_utf8();
            if matches!(c, '.' | '!' | '?') && para[end..].starts_with(char::is_whitespace) {
                out.push(para[start..end].trim());
                start = end;
            }
        }
        out.push(para[start..].trim());
        out.into_iter().filter(|s| !s.is_empty())
    })
}

/// "X is Y." with a short subject X (one to six words, not a pronoun) and a body of at least
/// three words → "What is X?".
fn definition_question(sentence: &str) -> Option<String> {
    let (verb, template) = DEFINERS.iter().find(|(v, _)| sentence.contains(v))?;
    let at = sentence.find(verb)?;
    let subject = sentence[..at].trim();
    let body = sentence[at + verb.len()..].trim();
    let words: Vec<&str> = subject.split_whitespace().collect();
    if words.is_empty() || words.len() > 6 || body.split_whitespace().count() < 3 {
        return None;
    }
    // "Secrets are kept …", "It is not …": a passive verb or an adverb after the verb is a
    // statement about the subject, not a definition of it.
    let next = body
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    if (verb.trim() == "is" || verb.trim() == "are")
        && (next.ends_with("ed") || NOT_DEFINING.contains(&next.as_str()))
    {
        return None;
    }
    let first = words[0].to_lowercase();
    if [
        "it", "this", "that", "there", "he", "she", "they", "which", "what", "here", "each",
    ]
    .contains(&first.as_str())
        || subject.contains([',', ':', ';', '(', '"'])
    {
        return None;
    }
    // "The adapter" → "the adapter"; a name keeps its capitals.
    let shown = match words[0] {
        "The" | "A" | "An" => format!("{}{}", words[0].to_lowercase(), &subject[words[0].len()..]),
        _ => subject.to_string(),
    };
    Some(if template.contains("{}") {
        format!("{}?", template.replace("{}", &shown))
    } else {
        format!("{template} {shown}?")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(text: &str, section: Option<&str>) -> Passage {
        Passage {
            doc: "d".into(),
            section: section.map(Into::into),
            start: 0,
            end: text.chars().count(),
            text: text.into(),
            tokens: 0,
        }
    }

    #[test]
    fn definitions_become_what_is_questions_answered_by_their_sentence() {
        let p = passage(
            "LoRA is a way to train a small adapter instead of the whole model. It is fast. \
             Checkpoints are snapshots written during a run. A quantised model means weights stored in fewer bits.",
            None,
        );
        let got: Vec<(String, String)> = template_pairs(&p)
            .into_iter()
            .map(|t| (t.question, t.answer))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "What is LoRA?".to_string(),
                    "LoRA is a way to train a small adapter instead of the whole model."
                        .to_string()
                ),
                (
                    "What are Checkpoints?".to_string(),
                    "Checkpoints are snapshots written during a run.".to_string()
                ),
                (
                    "What does a quantised model mean?".to_string(),
                    "A quantised model means weights stored in fewer bits.".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_heading_gives_a_question_about_the_passages_topic() {
        let p = passage("Exports are written atomically. Each export has a manifest. The manifest lists sha256 sums.", Some("Export"));
        let t = template_pairs(&p);
        let h = t.iter().find(|t| t.kind == TemplateKind::Heading).unwrap();
        assert_eq!(
            h.question,
            "What does the section “Export” say about manifest?"
        );
        assert_eq!(
            h.answer,
            "Each export has a manifest. The manifest lists sha256 sums."
        );
        // A passage without a repeated word: what the section says, without its heading line.
        let p = passage(
            "Checkpoints\n\nDocTune writes them atomically. Runs resume.",
            Some("Checkpoints"),
        );
        let h = template_pairs(&p).pop().unwrap();
        assert_eq!(h.question, "What does the section “Checkpoints” say?");
        assert_eq!(h.answer, "DocTune writes them atomically. Runs resume.");
        // Pages are labels, not headings.
        assert!(template_pairs(&passage("Plain words here.", Some("page 2"))).is_empty());
    }
}
