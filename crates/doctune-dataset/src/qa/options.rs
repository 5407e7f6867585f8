//! What a question–answer build is asked: who writes the pairs and how passages are cut,
//! grounded and deduplicated, with DocTune's defaults and limits.

use crate::DatasetError;
use serde::{Deserialize, Serialize};

/// What makes the pairs of a question–answer build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Generator {
    /// Questions from definitions and headings, no model (see [`super::template`]).
    #[default]
    Template,
    /// An instruct model of the library (its id, or a model folder from the command line).
    #[serde(rename_all = "camelCase")]
    Model { model: String },
}

impl Generator {
    /// `template`, or the model.
    pub fn describe(&self) -> &str {
        match self {
            Generator::Template => "template",
            Generator::Model { model } => model,
        }
    }
}

/// Options of a question–answer build (the `qa` mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QaOptions {
    pub generator: Generator,
    /// Tokens per passage (the generator's tokenizer counts them; the trained model's for the
    /// template path).
    pub passage_tokens: usize,
    /// Tokens repeated from the end of one passage at the start of the next in a section.
    pub overlap_tokens: usize,
    /// Pairs asked of the generator per passage.
    pub pairs_per_passage: usize,
    /// The least share of an answer's content words that must occur in its passage.
    pub min_support: f64,
    /// Also ask the generator whether the passage supports each answer (one more generation per
    /// pair; a "no" drops the pair).
    pub model_check: bool,
    /// Questions whose content words overlap an earlier question's by this much (Jaccard) are
    /// near-duplicates and dropped.
    pub duplicate_overlap: f64,
    /// Longest reply the generator may write for one passage (tokens).
    pub max_new_tokens: usize,
    /// Where the generator runs: `cpu`, `cuda` or `metal` (the run's device).
    pub device: Option<String>,
}

/// The longest passage accepted (tokens).
pub const MAX_PASSAGE_TOKENS: usize = 8_192;
/// The most pairs asked per passage.
pub const MAX_PAIRS_PER_PASSAGE: usize = 20;

impl Default for QaOptions {
    fn default() -> Self {
        Self {
            generator: Generator::Template,
            passage_tokens: 384,
            overlap_tokens: 48,
            pairs_per_passage: 3,
            min_support: 0.6,
            model_check: false,
            duplicate_overlap: 0.8,
            max_new_tokens: 512,
            device: None,
        }
    }
}

impl QaOptions {
    pub fn validate(&self) -> Result<(), DatasetError> {
        let bad = |m: String| Err(DatasetError::Invalid(m));
        if !(16..=MAX_PASSAGE_TOKENS).contains(&self.passage_tokens) {
            return bad(format!(
                "passage length must be between 16 and {MAX_PASSAGE_TOKENS} tokens"
            ));
        }
        if self.overlap_tokens >= self.passage_tokens / 2 {
            return bad("passage overlap must be below half the passage length".into());
        }
        if !(1..=MAX_PAIRS_PER_PASSAGE).contains(&self.pairs_per_passage) {
            return bad(format!(
                "pairs per passage must be between 1 and {MAX_PAIRS_PER_PASSAGE}"
            ));
        }
        if !(0.0..=1.0).contains(&self.min_support) {
            return bad("the support threshold must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.duplicate_overlap) || self.duplicate_overlap == 0.0 {
            return bad("the duplicate overlap must be above 0 and at most 1".into());
        }
        if !(16..=4096).contains(&self.max_new_tokens) {
            return bad("the generator's reply length must be between 16 and 4096 tokens".into());
        }
        if let Generator::Model { model } = &self.generator {
            if model.trim().is_empty() {
                return bad("name a generator model (or `template`)".into());
            }
        }
        Ok(())
    }
}
