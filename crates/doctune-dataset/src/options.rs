//! What a build is asked to do: the mode, the options (with DocTune's defaults) and the inputs.

use crate::qa::QaOptions;
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
