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
//! - [`template`]: pairs made without a model, from definitions ("X is …") and headings.

pub mod ground;
pub mod parse;
pub mod passages;
pub mod template;

pub use ground::{content_words, support, Dedup};
pub use parse::{parse_reply, Parsed, QaPair, ReplyError};
pub use passages::{passages, Passage, PassageOptions, QaSection, QaSource};
pub use template::{template_pairs, TemplateKind, TemplatePair};
