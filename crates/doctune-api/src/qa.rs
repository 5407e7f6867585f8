//! The question–answer dataset mode's model side: the project's extracted documents as
//! `doctune_dataset::qa` sources (with their headings and chapters), and the generator model —
//! a library model run through DocTune's own generation with its chat template, greedy, on the
//! device the options name — behind `doctune_dataset::qa::PairModel`.

use crate::models::resolve_model;
use crate::{generate, ApiError, Home};
use doctune_core::{CancelToken, ProgressSink};
use doctune_dataset::qa::{PairModel, QaCache, QaPairs, QaSection, QaSource};
use doctune_dataset::{DatasetError, Generator, QaOptions};
use doctune_ingest::{Document, SectionKind};
use doctune_models::{GenerateOptions, LoadOptions, LoadedModel, Sampling, StopReason};
use doctune_tokenizer::{Message, ModelTokenizer};
use sha2::{Digest, Sha256};
use std::path::Path;

/// An extracted document of a project: its name, its sha256 and what extraction found.
pub(crate) type Extracted = (String, String, Document);

/// A document as passages are cut from it: headings and chapters are boundaries, pages and
/// sheets only label.
fn source(name: String, sha256: String, doc: Document) -> QaSource {
    QaSource {
        name,
        sha256,
        sections: doc
            .sections
            .into_iter()
            .map(|s| QaSection {
                boundary: matches!(s.kind, SectionKind::Heading | SectionKind::Chapter),
                label: s.label,
                start: s.start,
                end: s.end,
            })
            .collect(),
        text: doc.text,
    }
}

/// The generator: a loaded model and what identifies it.
struct GeneratorModel {
    loaded: LoadedModel,
    fingerprint: String,
}

/// What identifies a model folder's weights and prompt format for the cache: SHA-256 of its
/// `config.json`, tokenizer files and the names and sizes of its weight files.
fn fingerprint(dir: &Path) -> Result<String, ApiError> {
    let mut h = Sha256::new();
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
    }
    let mut weights: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map_err(|e| ApiError::invalid(format!("{}: {e}", dir.display())))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let len = e.metadata().ok()?.len();
            name.ends_with(".safetensors").then_some((name, len))
        })
        .collect();
    weights.sort();
    for (name, len) in weights {
        h.update(name.as_bytes());
        h.update(len.to_le_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

impl PairModel for GeneratorModel {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn reply(
        &self,
        messages: &[Message],
        max_new_tokens: usize,
        cancel: &CancelToken,
    ) -> Result<String, DatasetError> {
        let tok = &self.loaded.tokenizer;
        let text = tok.require_chat_template()?.render(messages, true)?;
        let ids = tok.encode(&text, false)?;
        let opts = GenerateOptions {
            max_new_tokens,
            sampling: Sampling::greedy(),
            stop_ids: tok.stop_ids().to_vec(),
            stop_strings: tok.stop_strings(true),
        };
        let out =
            doctune_models::generate(&self.loaded.model, tok, &ids, &opts, cancel, &mut |_| {})
                .map_err(|e| DatasetError::Invalid(format!("the generator model failed: {e}")))?;
        if out.stop_reason == StopReason::Cancelled {
            return Err(DatasetError::Cancelled);
        }
        Ok(out.text)
    }
}

/// Makes the pairs of a question–answer build: loads the generator (a library id or, from the
/// command line, a model folder) unless the templates make them, and caches each passage's
/// replies in the project's `datasets/.qa-cache/`. Passages are measured with the generator's
/// tokenizer (the trained model's, `tok`, for the templates).
pub(crate) fn make_pairs(
    home: &Home,
    docs: Vec<Extracted>,
    datasets: &Path,
    opts: &QaOptions,
    tok: &ModelTokenizer,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<QaPairs, ApiError> {
    opts.validate()?;
    let sources: Vec<QaSource> = docs
        .into_iter()
        .map(|(name, sha, doc)| source(name, sha, doc))
        .collect();
    let cache = QaCache::in_datasets(datasets);
    let generator = match &opts.generator {
        Generator::Template => None,
        Generator::Model { model } => {
            let dir = resolve_model(home, model)?;
            let load = LoadOptions {
                device: generate::device(opts.device.as_deref())?,
                ..Default::default()
            };
            let loaded = doctune_models::load(&dir, &load)?;
            if loaded.tokenizer.chat_template().is_none() {
                return Err(ApiError::invalid(format!(
                    "{model}: the generator has no chat template; choose an instruct model (or \
                     `template`)"
                )));
            }
            Some(GeneratorModel {
                fingerprint: fingerprint(&dir)?,
                loaded,
            })
        }
    };
    let counter: &ModelTokenizer = generator.as_ref().map_or(tok, |g| &g.loaded.tokenizer);
    let count = |s: &str| {
        counter
            .encode(s, false)
            .map_or(s.len() / 4, |ids| ids.len())
    };
    let model = generator.as_ref().map(|g| g as &dyn PairModel);
    Ok(doctune_dataset::qa::make_pairs(
        &sources, opts, model, &cache, &count, sink, cancel,
    )?)
}
