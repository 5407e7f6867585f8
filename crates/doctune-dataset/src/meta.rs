//! What a build reports and writes: `meta.json` ([`DatasetMeta`], with per-source counts and
//! statistics) and one example on disk ([`Record`]).

use crate::import::{BadRow, RowFormat};
use crate::options::BuildOptions;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One source of a dataset, for `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceInfo {
    pub name: String,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<RowFormat>,
    pub rows: usize,
    pub examples: usize,
}

/// Counts and distributions of a build.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub train_examples: usize,
    pub val_examples: usize,
    pub train_tokens: u64,
    pub val_tokens: u64,
    /// Tokens that carry loss (train split).
    pub trained_tokens: u64,
    /// Examples cut to `seq_len`.
    pub truncated: usize,
    /// Examples left out, by reason.
    pub dropped: BTreeMap<String, usize>,
    pub duplicates: usize,
    pub bad_rows: usize,
    /// Example lengths in tokens: `histogram[i]` counts lengths in
    /// `[i * bin_width, (i + 1) * bin_width)`.
    pub histogram: Vec<usize>,
    pub bin_width: usize,
    /// How the split was drawn: `example`, `document` or `window`.
    pub split_unit: String,
}

/// `meta.json` of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetMeta {
    pub schema: u32,
    pub id: String,
    pub created_at: String,
    pub model: String,
    pub tokenizer_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_template_sha256: Option<String>,
    pub options: BuildOptions,
    pub sources: Vec<SourceInfo>,
    pub stats: Stats,
    /// The first [`MAX_LISTED_BAD_ROWS`] bad rows (`stats.badRows` counts all).
    pub bad_rows: Vec<BadRow>,
    /// What was detected, for people ("data.jsonl: sharegpt (conversations: from, value), 120 rows").
    pub notes: Vec<String>,
    /// Question–answer builds: what was generated, kept and dropped, per document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qa: Option<crate::qa::QaReport>,
}

/// One example on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub ids: Vec<u32>,
    pub mask: Vec<u8>,
    pub text: String,
    pub spans: Vec<(usize, usize)>,
    /// Question–answer datasets: the example's pair and passage (lines of `pairs.jsonl` and
    /// `passages.jsonl`, counted from 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RecordSource>,
}

/// Where a question–answer example came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSource {
    pub pair: usize,
    pub passage: usize,
}
