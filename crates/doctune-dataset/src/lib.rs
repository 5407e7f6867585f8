//! The dataset builder: what the trainer consumes, and what the user sees of it.
//!
//! [`build`] turns documents ([`Mode::Pretrain`], see [`pack`]), instruction files
//! ([`Mode::Instruct`], see [`import`] and [`chat`]) or question–answer pairs made from the
//! documents ([`Mode::Qa`], see [`qa`]) into `datasets/<id>/`:
//!
//! - `train.jsonl`, `val.jsonl` — one example per line:
//!   `{"ids": [token ids], "mask": [1 if the token is a training target, else 0], "text":
//!   "…", "spans": [[start, end], …]}`. `mask[t]` marks token `t` as a *target* (predicted from
//!   the tokens before it). `text` is exactly what was tokenised (the rendered conversation, or
//!   the window's decoded text) and `spans` are the trained parts of it in character (Unicode
//!   scalar) offsets, for previews. Read them streaming with [`read_split`], or by index with
//!   [`SplitReader`] ([`folder`] owns the folder's layout).
//! - `meta.json` ([`DatasetMeta`]) — sources with sha256, the tokenizer's and template's sha256,
//!   the options, the statistics and every bad row with its line number (question–answer
//!   builds: the per-document report).
//! - question–answer builds only: `pairs.jsonl` and `passages.jsonl`, each example's pair and
//!   the passage it came from (see [`folder`]).
//!
//! The folder is built under a temporary name beside its destination and renamed into place
//! when complete, so a crash leaves no half-built dataset. Splits are decided by a seeded
//! SHA-256 of each example, the same on every OS.

pub mod chat;
pub mod fast;
pub mod folder;
pub mod import;
pub mod pack;
pub mod pairs;
pub mod qa;

pub mod build;
pub mod meta;
pub mod options;

pub use build::{build, is_val, tokenize_documents, BuildReport};
pub use folder::{DatasetDir, Split, SplitReader, META_FILE, PAIRS_FILE, PASSAGES_FILE};
pub use meta::{DatasetMeta, Record, RecordSource, SourceInfo, Stats};
pub use options::{BuildOptions, Inputs, LossOn, Mode, OnBadRow, TextSource};
pub use qa::{Generator, QaOptions};

use import::BadRow;
use std::path::{Path, PathBuf};

/// Longest `seq_len` accepted.
pub const MAX_SEQ_LEN: usize = 131_072;
/// Bad rows listed one by one in `meta.json` (all are counted).
pub const MAX_LISTED_BAD_ROWS: usize = 1_000;
/// What can go wrong building a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    #[error("{}: line {}: {}", .0.file, .0.line, .0.reason)]
    BadRow(BadRow),
    #[error("{0}")]
    Invalid(String),
    #[error("nothing to train on: {0}")]
    Empty(String),
    #[error(transparent)]
    Tokenizer(#[from] doctune_tokenizer::TokenizerError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cancelled")]
    Cancelled,
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `meta.json` of a dataset folder ([`DatasetDir::read_meta`]).
pub fn read_meta(dir: &Path) -> Result<DatasetMeta, DatasetError> {
    DatasetDir::at(dir).read_meta()
}

/// The examples of a split, read one line at a time ([`DatasetDir::read_split`]).
pub fn read_split(
    dir: &Path,
    split: Split,
) -> Result<impl Iterator<Item = Result<Record, DatasetError>>, DatasetError> {
    DatasetDir::at(dir).read_split(split)
}

/// The first `n` training examples, for previews.
pub fn preview(dir: &Path, n: usize) -> Result<Vec<Record>, DatasetError> {
    read_split(dir, Split::Train)?.take(n).collect()
}
