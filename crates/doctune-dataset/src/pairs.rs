//! A question–answer dataset's pairs written out for review: alpaca
//! (`instruction`, `input`, `output`) or OpenAI messages (`messages`), one JSON object per line,
//! each with a `source` object (document, section, character span, split, origin, support) that
//! the instruction import ignores. Edit the file and build it again with the instruction mode
//! (`--mode instruct --input FILE`): it is read like any alpaca or messages file.

use crate::folder::DatasetDir;
use crate::{io, DatasetError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;

/// The layout of an exported pairs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PairFormat {
    Alpaca,
    Messages,
}

impl std::str::FromStr for PairFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "alpaca" => Ok(PairFormat::Alpaca),
            "messages" | "openai" => Ok(PairFormat::Messages),
            other => Err(format!(
                "unknown pairs format `{other}` (alpaca or messages)"
            )),
        }
    }
}

/// Writes the pairs of the dataset in `dir` to `out` (atomically; an existing file is replaced)
/// and returns how many.
pub fn export_pairs(dir: &Path, format: PairFormat, out: &Path) -> Result<usize, DatasetError> {
    let ds = DatasetDir::open(dir)?;
    let pairs = ds.read_pairs()?;
    if pairs.is_empty() {
        return Err(DatasetError::Input {
            path: dir.to_path_buf(),
            message: "is not a question-answer dataset (it has no pairs.jsonl)".into(),
        });
    }
    let mut text = String::new();
    for p in &pairs {
        let source = json!({
            "document": p.document,
            "section": p.section,
            "start": p.start,
            "end": p.end,
            "split": p.split,
            "origin": p.origin,
            "support": p.support,
        });
        let row = match format {
            PairFormat::Alpaca => json!({
                "instruction": p.question,
                "input": "",
                "output": p.answer,
                "source": source,
            }),
            PairFormat::Messages => json!({
                "messages": [
                    {"role": "user", "content": p.question},
                    {"role": "assistant", "content": p.answer},
                ],
                "source": source,
            }),
        };
        text.push_str(&row.to_string());
        text.push('\n');
    }
    doctune_core::write_atomic(out, text.as_bytes()).map_err(io(out))?;
    Ok(pairs.len())
}
