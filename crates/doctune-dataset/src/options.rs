//! What a build is asked to do: the mode, the options (with DocTune's defaults) and the inputs.

use crate::{DatasetError, MAX_SEQ_LEN};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Continued pretraining on documents.
    Pretrain,
    /// Instruction tuning on conversations.
    Instruct,
    /// Instruction tuning on question–answer pairs made from the project's documents (see
    /// [`crate::qa`]).
    Qa,
}

/// Which tokens of a conversation carry loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum LossOn {
    /// The assistant's replies (and their end-of-turn marker).
    #[default]
    Assistant,
    /// Every token (except BOS).
    All,
}

/// What to do with a row that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum OnBadRow {
    /// Skip it, count it and list it in the report.
    #[default]
    Skip,
    /// Stop the build at the first one.
    Stop,
}

/// Options of a build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BuildOptions {
    pub mode: Mode,
    pub seq_len: usize,
    /// Pretrain: distance between window starts (default `seq_len`: no overlap).
    pub stride: Option<usize>,
    /// Pretrain: keep the last, shorter window.
    pub keep_last_partial: bool,
    pub val_fraction: f64,
    pub seed: u64,
    pub loss_on: LossOn,
    pub on_bad_row: OnBadRow,
    /// Drop exact duplicates (same rendered text).
    pub dedup: bool,
    /// Qa: how pairs are made.
    pub qa: QaOptions,
}

/// What makes the pairs of a question–answer build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Generator {
    /// Questions from definitions and headings, no model (see [`crate::qa::template`]).
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

/// Options of a question–answer build ([`Mode::Qa`]).
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

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Instruct,
            seq_len: 1024,
            stride: None,
            keep_last_partial: true,
            val_fraction: 0.1,
            seed: 0,
            loss_on: LossOn::Assistant,
            on_bad_row: OnBadRow::Skip,
            dedup: true,
            qa: QaOptions::default(),
        }
    }
}

impl BuildOptions {
    pub fn validate(&self) -> Result<(), DatasetError> {
        let bad = |m: String| Err(DatasetError::Invalid(m));
        if !(2..=MAX_SEQ_LEN).contains(&self.seq_len) {
            return bad(format!(
                "sequence length must be between 2 and {MAX_SEQ_LEN}"
            ));
        }
        if let Some(s) = self.stride {
            if s == 0 || s > self.seq_len {
                return bad("stride must be between 1 and the sequence length".into());
            }
        }
        if !(0.0..0.9).contains(&self.val_fraction) {
            return bad("validation fraction must be at least 0 and below 0.9".into());
        }
        if self.mode == Mode::Qa {
            self.qa.validate()?;
        }
        Ok(())
    }
}

/// A document for continued pretraining.
#[derive(Debug, Clone)]
pub struct TextSource {
    pub name: String,
    pub sha256: String,
    pub text: String,
}

/// What a build reads.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// Pretrain: extracted documents.
    Documents(Vec<TextSource>),
    /// Instruct: instruction files (JSONL, JSON, CSV/TSV).
    Files(Vec<PathBuf>),
    /// Qa: the pairs [`crate::qa::make_pairs`] made, with their passages and report.
    Pairs(Box<crate::qa::QaPairs>),
}
