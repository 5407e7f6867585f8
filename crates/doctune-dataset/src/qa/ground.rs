//! Whether a passage supports an answer, and which questions repeat each other.
//!
//! The lexical check: the share of the answer's content words (lower-cased words of three or more
//! letters, or numbers, not in a stop list, with plural/verb endings folded) that occur in the
//! passage. An answer made of the passage's words scores near 1; one the model invented scores
//! low. It cannot see a negation or a swapped number in a copied sentence; that is what the
//! optional model check is for.

use std::collections::HashSet;

const STOP: &[&str] = &[
    "the", "and", "for", "are", "was", "were", "with", "that", "this", "these", "those", "from",
    "into", "its", "it's", "has", "have", "had", "not", "but", "can", "you", "your", "they",
    "their", "them", "what", "which", "who", "whom", "when", "where", "why", "how", "does", "did",
    "doing", "been", "being", "than", "then", "there", "here", "about", "also", "each", "any",
    "all", "some", "such", "only", "own", "same", "other", "more", "most", "very", "will", "would",
    "should", "could", "may", "might", "must", "one", "our", "out", "over", "under", "his", "her",
    "she", "him", "who", "use", "used", "using", "via", "per", "yes",
];

/// The content words of `text`, in order (with repeats).
pub fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| {
            let numeric = w.chars().all(|c| c.is_ascii_digit()) && !w.is_empty();
            numeric || (w.chars().count() >= 3 && !STOP.contains(&w.as_str()))
        })
        .map(|w| fold(&w))
        .collect()
}

/// Plural and common verb endings folded, so "checkpoints" meets "checkpoint".
fn fold(w: &str) -> String {
    for suffix in ["ing", "ies", "es", "ed", "s"] {
        if let Some(stem) = w.strip_suffix(suffix) {
            if stem.chars().count() >= 3 {
                return if suffix == "ies" {
                    format!("{stem}y")
                } else {
                    stem.to_string()
                };
            }
        }
    }
    w.to_string()
}

/// The share (0–1) of the answer's distinct content words found in the passage; 0 for an
/// answer without content words.
pub fn support(answer: &str, passage: &str) -> f64 {
    let have: HashSet<String> = content_words(passage).into_iter().collect();
    let want: HashSet<String> = content_words(answer).into_iter().collect();
    if want.is_empty() {
        return 0.0;
    }
    want.iter().filter(|w| have.contains(*w)).count() as f64 / want.len() as f64
}

/// Questions seen so far; a new one is a near-duplicate when its content words overlap an
/// earlier one's by at least `threshold` (Jaccard), or both normalise to the same words.
#[derive(Debug, Clone)]
pub struct Dedup {
    threshold: f64,
    seen: Vec<HashSet<String>>,
}

impl Dedup {
    pub fn new(threshold: f64) -> Self {
        Self {
            threshold,
            seen: Vec::new(),
        }
    }

    /// Whether `question` is new (and remembers it) or repeats one seen before.
    pub fn insert(&mut self, question: &str) -> bool {
        let words: HashSet<String> = content_words(question).into_iter().collect();
        let norm: String = question
            .to_lowercase()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let dup = self.seen.iter().any(|s| {
            if s.is_empty() || words.is_empty() {
                return s.is_empty() && words.is_empty() && !norm.is_empty();
            }
            let inter = s.intersection(&words).count() as f64;
            inter / (s.len() + words.len()) as f64 * 2.0
                >= 2.0 * self.threshold / (1.0 + self.threshold)
        });
        if !dup {
            self.seen.push(words);
        }
        !dup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSAGE: &str = "A run writes a checkpoint every 50 steps. Checkpoints are written \
        atomically, so a crash resumes from the last complete one. The adapter is exported as \
        safetensors.";

    #[test]
    fn supported_answers_score_high_and_invented_ones_low() {
        for (answer, supported) in [
            ("Every 50 steps.", true),
            ("A crash resumes from the last complete checkpoint.", true),
            ("They are written atomically.", true),
            ("As safetensors.", true),
            (
                "The checkpoints are uploaded to a cloud bucket nightly.",
                false,
            ),
            ("It uses pickle files on a remote server.", false),
            ("Yes.", false),
            ("", false),
        ] {
            let s = support(answer, PASSAGE);
            assert_eq!(s >= 0.6, supported, "{answer}: {s}");
        }
    }

    #[test]
    fn near_duplicate_questions_are_caught_and_different_ones_kept() {
        let mut d = Dedup::new(0.8);
        assert!(d.insert("How often does a run write a checkpoint?"));
        assert!(!d.insert("How often does a run write checkpoints?"));
        assert!(!d.insert("how often does a RUN write a checkpoint"));
        assert!(d.insert("What format is the adapter exported in?"));
        assert!(d.insert("What happens after a crash?"));
    }
}
