//! Question–answer pairs from the user's own documents, each tied to the passage it came from
//! (the `qa` dataset mode's building blocks).
//!
//! - [`passages`](mod@passages): documents cut into passages by tokens, at paragraph and
//!   sentence boundaries, never across a heading or chapter, with an overlap;
//! - [`parse`]: a generator model's reply read robustly into pairs (the constrained
//!   `Q:`/`A:` format asked for, JSON arrays, numbering and Markdown around them), with what
//!   could not be read counted, never a crash;
//! - [`ground`]: whether a passage supports an answer (content-word overlap), and near-duplicate
//!   questions;
//! - [`template`]: pairs made without a model, from definitions ("X is …") and headings;
//! - [`prompt`]: what the generator model is asked (versioned);
//! - [`cache`]: each passage's generated pairs on disk, the build's checkpoint;
//! - [`options`]: what a build is asked (the generator, passage sizes, thresholds);
//! - [`make`]: the whole first half — passages, pairs, grounding, deduplication, the report.
//!
//! A built dataset's pairs are exported for review by [`crate::pairs`].

pub mod cache;
pub mod ground;
pub mod make;
pub mod options;
pub mod parse;
pub mod passages;
pub mod prompt;
pub mod template;

pub use cache::{CacheEntry, QaCache};
pub use make::{
    make_pairs, DocReport, PairModel, PairOrigin, QaPairs, QaReport, SourcedPair, StoredPassage,
};
pub use options::{Generator, QaOptions, MAX_PAIRS_PER_PASSAGE, MAX_PASSAGE_TOKENS};

pub use ground::{content_words, support, Dedup};
pub use parse::{parse_reply, Parsed, QaPair, ReplyError};
pub use passages::{passages, Passage, PassageOptions, QaSection, QaSource};
pub use template::{template_pairs, TemplateKind, TemplatePair};
