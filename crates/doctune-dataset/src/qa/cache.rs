//! The generator's replies per passage, kept on disk: the question–answer build's checkpoint
//! and cache in one. Each passage's result is written atomically as soon as it is generated,
//! under a key made of the passage's text, the generator model's fingerprint, the prompt version
//! and the generation settings, so a cancelled or killed build continues where it stopped and a
//! rebuild with other grounding thresholds regenerates nothing.
//!
//! The folder (`datasets/.qa-cache/` of a project, see [`QaCache::in_datasets`]) holds one
//! `<key>.json` ([`CacheEntry`]) per passage. An entry that cannot be read is treated as absent
//! and overwritten.

use super::parse::QaPair;
use super::prompt::PROMPT_VERSION;
use crate::{io, DatasetError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The cache folder's name in a project's `datasets/` (a dot name: not a dataset).
pub const CACHE_DIR: &str = ".qa-cache";

/// What the generator produced for one passage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub prompt_version: u32,
    pub generator: String,
    pub passage_sha256: String,
    /// Generations made (1, or 2 after a retry).
    pub attempts: u32,
    /// Neither attempt could be read.
    pub malformed: bool,
    /// Questions or answers without a partner, or too long.
    pub incomplete: usize,
    pub pairs: Vec<QaPair>,
    /// The model check's verdict per pair, once asked (`None`: the reply was neither yes nor
    /// no).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdicts: Option<Vec<Option<bool>>>,
    /// Seconds the generation took (for the ETA of later builds and the report).
    pub seconds: f64,
}

/// The cache folder.
#[derive(Debug, Clone)]
pub struct QaCache {
    dir: PathBuf,
}

impl QaCache {
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cache of the project whose `datasets/` folder is `datasets`.
    pub fn in_datasets(datasets: &Path) -> Self {
        Self::at(datasets.join(CACHE_DIR))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of a passage's pairs: SHA-256 of the prompt version, the generator's fingerprint,
    /// the pairs asked, the reply limit and the passage's text and place (the prompt names the
    /// document and section).
    pub fn key(
        generator: &str,
        pairs: usize,
        max_new_tokens: usize,
        doc: &str,
        section: Option<&str>,
        text: &str,
    ) -> String {
        let mut h = Sha256::new();
        for part in [
            PROMPT_VERSION.to_string().as_str(),
            generator,
            pairs.to_string().as_str(),
            max_new_tokens.to_string().as_str(),
            doc,
            section.unwrap_or(""),
            text,
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The entry under `key`, if there is a readable one of this prompt version.
    pub fn get(&self, key: &str) -> Option<CacheEntry> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        serde_json::from_slice::<CacheEntry>(&bytes)
            .ok()
            .filter(|e| e.prompt_version == PROMPT_VERSION)
    }

    /// Writes `entry` under `key` atomically.
    pub fn put(&self, key: &str, entry: &CacheEntry) -> Result<(), DatasetError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let p = self.path(key);
        doctune_core::write_json_atomic(&p, entry).map_err(io(&p))
    }

    /// How many entries the cache holds.
    pub fn len(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .count()
            })
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_with_every_input_and_entries_round_trip() {
        let k = QaCache::key("m", 3, 512, "a.md", None, "text");
        assert_ne!(k, QaCache::key("n", 3, 512, "a.md", None, "text"));
        assert_ne!(k, QaCache::key("m", 4, 512, "a.md", None, "text"));
        assert_ne!(k, QaCache::key("m", 3, 256, "a.md", None, "text"));
        assert_ne!(k, QaCache::key("m", 3, 512, "a.md", Some("s"), "text"));
        assert_ne!(k, QaCache::key("m", 3, 512, "a.md", None, "text!"));
        // Parts are length-prefixed: moving a character between them changes the key.
        assert_ne!(
            QaCache::key("m", 3, 512, "ab", None, "c"),
            QaCache::key("m", 3, 512, "a", None, "bc")
        );
        let dir = tempfile::tempdir().unwrap();
        let c = QaCache::in_datasets(dir.path());
        assert!(c.get(&k).is_none());
        let e = CacheEntry {
            prompt_version: PROMPT_VERSION,
            generator: "m".into(),
            attempts: 1,
            pairs: vec![QaPair {
                question: "Q?".into(),
                answer: "A.".into(),
            }],
            ..CacheEntry::default()
        };
        c.put(&k, &e).unwrap();
        assert_eq!(c.get(&k), Some(e));
        assert_eq!(c.len(), 1);
        // A damaged entry is a miss, not an error.
        std::fs::write(c.dir().join(format!("{k}.json")), b"{not json").unwrap();
        assert!(c.get(&k).is_none());
    }
}
