//! The build itself: documents packed into windows or instruction files rendered with the chat
//! template, tokenised, masked, deduplicated, split by a seeded hash and written into a staged
//! dataset folder that is renamed into place when complete.

use crate::folder::{write_lines, DatasetDir, Split};
use crate::import::{self, BadRow, Example};
use crate::meta::{DatasetMeta, Record, RecordSource, SourceInfo, Stats};
use crate::options::{BuildOptions, Inputs, LossOn, Mode, OnBadRow, TextSource};
use crate::pack::{self, StreamToken, Window};
use crate::{chat, fast, io, DatasetError, MAX_LISTED_BAD_ROWS};
use doctune_core::{CancelToken, JobEvent, ProgressSink, StagedDir};
use doctune_tokenizer::{Message, ModelTokenizer};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Examples tokenised per batch.
const BATCH: usize = 512;

/// Byte ranges of a text.
type ByteSpans = Vec<(usize, usize)>;

/// An example before the split.
struct Built {
    key: [u8; 32],
    record: Record,
    /// Question–answer builds: the example's pair (index into [`crate::qa::QaPairs::pairs`]).
    pair: Option<usize>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn file_sha256(path: &Path) -> Result<String, DatasetError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io(path))?;
    Ok(hex::encode(h.finalize()))
}

/// Whether an example with this key goes to validation: the first 8 bytes of
/// SHA-256(seed ‖ key) as a fraction of 2⁶⁴, below `fraction`.
pub fn is_val(seed: u64, key: &[u8], fraction: f64) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(key);
    let d = h.finalize();
    let x = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
    (x as f64 / 18_446_744_073_709_551_616.0) < fraction
}

/// The result of a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildReport {
    pub dir: PathBuf,
    pub meta: DatasetMeta,
}

fn check_cancel(cancel: &CancelToken) -> Result<(), DatasetError> {
    if cancel.is_cancelled() {
        Err(DatasetError::Cancelled)
    } else {
        Ok(())
    }
}

/// Tokenises a rendered text and turns byte spans into a token mask.
fn masked_record(
    enc: &tokenizers::Encoding,
    text: String,
    byte_spans: &[(usize, usize)],
    seq_len: usize,
    bos: Option<u32>,
) -> (Record, bool) {
    let ids = enc.get_ids();
    let offsets = enc.get_offsets(); // byte offsets
    let n = ids.len().min(seq_len);
    let truncated = ids.len() > seq_len;
    let mut mask = vec![0u8; n];
    for (t, m) in mask.iter_mut().enumerate() {
        let s = offsets[t].0;
        let inside = byte_spans.iter().any(|&(a, b)| s >= a && s < b);
        if inside && Some(ids[t]) != bos {
            *m = 1;
        }
    }
    // The text of what was kept, and the spans clipped to it.
    let kept_bytes = if truncated {
        offsets[n - 1].1
    } else {
        text.len()
    };
    let kept_text = text[..kept_bytes.min(text.len())].to_string();
    let clipped: Vec<(usize, usize)> = byte_spans
        .iter()
        .filter(|&&(a, _)| a < kept_text.len())
        .map(|&(a, b)| (a, b.min(kept_text.len())))
        .collect();
    let spans = chat::char_spans(&kept_text, &clipped);
    (
        Record {
            ids: ids[..n].to_vec(),
            mask,
            text: kept_text,
            spans,
            source: None,
        },
        truncated,
    )
}

/// Tokenises rendered texts (with their trained byte spans) in one parallel batch and masks
/// them; an example without a trained token is counted in `stats.dropped` and comes back as
/// `None`, one cut to `seq_len` in `stats.truncated`.
fn encode_examples(
    tok: &ModelTokenizer,
    rendered: Vec<(String, ByteSpans)>,
    seq_len: usize,
    bos: Option<u32>,
    stats: &mut Stats,
) -> Result<Vec<Option<Record>>, DatasetError> {
    let texts: Vec<&str> = rendered.iter().map(|(t, _)| t.as_str()).collect();
    let encodings = tok
        .inner()
        .encode_batch(texts, false)
        .map_err(|e| DatasetError::Invalid(format!("tokenizer: {e}")))?;
    let mut out = Vec::with_capacity(encodings.len());
    for ((text, spans), enc) in rendered.into_iter().zip(encodings) {
        let (record, truncated) = masked_record(&enc, text, &spans, seq_len, bos);
        if !record.mask.contains(&1) {
            let reason = if truncated {
                format!("no trained token within the first {seq_len} tokens")
            } else {
                "no token to train on".to_string()
            };
            *stats.dropped.entry(reason).or_default() += 1;
            out.push(None);
            continue;
        }
        stats.truncated += usize::from(truncated);
        out.push(Some(record));
    }
    Ok(out)
}

/// A document's tokens as `(id, start byte, end byte)`.
type Located = Vec<(u32, usize, usize)>;

/// The stream tokens of one document: boundaries where a token begins a sentence or paragraph
/// (a token like " The" starts at the space before the sentence, so leading whitespace is
/// skipped), `no_loss` on BOS.
fn stream_tokens(
    text: &str,
    located: &Located,
    bos: Option<u32>,
    eos: Option<u32>,
) -> Vec<StreamToken> {
    let bchars = pack::boundary_chars(text);
    let mut byte_to_char = vec![0usize; text.len() + 1];
    let mut chars = Vec::with_capacity(text.len());
    for (ci, (bi, ch)) in text.char_indices().enumerate() {
        byte_to_char[bi..bi + ch.len_utf8()].fill(ci);
        chars.push(ch);
    }
    byte_to_char[text.len()] = chars.len();
    let mut out = Vec::with_capacity(located.len() + 1);
    let mut first = true;
    for &(id, s, e) in located {
        let special = Some(id) == bos && s == e;
        let mut c = byte_to_char[s.min(text.len())];
        let c_end = byte_to_char[e.min(text.len())];
        while c < c_end && chars[c].is_whitespace() {
            c += 1;
        }
        let boundary = first || (!special && bchars.get(c).copied().unwrap_or(false));
        first = false;
        out.push(StreamToken {
            id,
            boundary,
            no_loss: special,
        });
    }
    if let Some(e) = eos {
        out.push(StreamToken {
            id: e,
            boundary: false,
            no_loss: false,
        });
    }
    out
}

/// Documents checked against the full pipeline before the fast path is trusted for a build.
const FAST_PATH_CHECKS: usize = 8;

/// Pretraining's first half: documents tokenised as `tokenizer(text)` tokenises them, each
/// followed by EOS, into one token stream per split (`split_of` says which, 0 or 1), with the
/// sentence/paragraph starts marked (see [`pack`]); documents are processed in parallel, through
/// the exact byte-level fast path where it applies (see [`fast`]). [`pack::windows`] cuts a
/// stream into windows.
pub fn tokenize_documents(
    tok: &ModelTokenizer,
    docs: &[&TextSource],
    split_of: impl Fn(&TextSource) -> usize,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<[Vec<StreamToken>; 2], DatasetError> {
    use rayon::prelude::*;
    let bos = tok.bos_token().and_then(|b| tok.token_to_id(b));
    let eos = tok.eos_token().and_then(|e| tok.token_to_id(e));
    let inner = tok.inner();
    let slow = |text: &str| -> Result<Located, DatasetError> {
        let enc = inner
            .encode(text, true)
            .map_err(|e| DatasetError::Invalid(format!("tokenizer: {e}")))?;
        Ok(enc
            .get_ids()
            .iter()
            .zip(enc.get_offsets())
            .map(|(&i, &(s, e))| (i, s, e))
            .collect())
    };
    let mut fast = serde_json::to_value(inner).ok().and_then(|json| {
        fast::FastByteLevel::new(&json, |special| {
            tok.encode(fast::FastByteLevel::PROBE, special).ok()
        })
    });
    // Trust the fast path only after it agrees with the full pipeline on the first documents.
    if let Some(f) = &fast {
        let mut cache = std::collections::HashMap::new();
        for d in docs.iter().take(FAST_PATH_CHECKS) {
            if let Some((ids, _)) = f.encode(inner.get_model(), &d.text, &mut cache) {
                let full: Vec<u32> = slow(&d.text)?.into_iter().map(|t| t.0).collect();
                if ids != full {
                    fast = None;
                    break;
                }
            }
        }
    }
    let mut streams: [Vec<StreamToken>; 2] = [Vec::new(), Vec::new()];
    let total = docs.len() as u64;
    for (chunk_no, chunk) in docs.chunks(BATCH).enumerate() {
        check_cancel(cancel)?;
        let per_doc: Vec<Result<Vec<StreamToken>, DatasetError>> = chunk
            .par_iter()
            .map_init(std::collections::HashMap::new, |cache, d| {
                let located = match fast
                    .as_ref()
                    .and_then(|f| f.encode(inner.get_model(), &d.text, cache))
                {
                    Some((ids, starts)) => {
                        let mut v = Vec::with_capacity(ids.len());
                        for k in 0..ids.len() {
                            // A token ends where the next starts (BOS: an empty range at 0).
                            let end = starts
                                .get(k + 1)
                                .copied()
                                .unwrap_or(d.text.len())
                                .max(starts[k]);
                            v.push((ids[k], starts[k], end));
                        }
                        v
                    }
                    None => slow(&d.text)?,
                };
                Ok(stream_tokens(&d.text, &located, bos, eos))
            })
            .collect();
        for (d, tokens) in chunk.iter().zip(per_doc) {
            streams[split_of(d).min(1)].extend(tokens?);
        }
        let done = ((chunk_no + 1) * BATCH).min(total as usize) as u64;
        sink.emit(JobEvent::progress(done, total, "documents", None));
    }
    Ok(streams)
}

/// Builds a dataset into `datasets_dir/<id>/` (see the crate docs).
#[allow(clippy::too_many_arguments)]
pub fn build(
    datasets_dir: &Path,
    id: &str,
    model_dir: &Path,
    tok: &ModelTokenizer,
    inputs: &Inputs,
    opts: &BuildOptions,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<BuildReport, DatasetError> {
    opts.validate()?;
    doctune_core::check_id("dataset", id).map_err(|e| DatasetError::Invalid(e.to_string()))?;
    let mut stats = Stats {
        bin_width: (opts.seq_len / 16).max(1),
        histogram: vec![0; 16],
        ..Stats::default()
    };
    let mut notes = Vec::new();
    let mut sources = Vec::new();
    let mut bad_rows: Vec<BadRow> = Vec::new();
    let mut built: Vec<Built> = Vec::new();
    let bos = tok.bos_token().and_then(|b| tok.token_to_id(b));

    match (opts.mode, inputs) {
        (Mode::Instruct, Inputs::Files(files)) => {
            let template = tok.require_chat_template()?;
            // Whether the tokenizer call adds BOS (plain-text rows get it as `tokenizer(text)` would).
            let adds_bos = tok.encode("a", true)? != tok.encode("a", false)?;
            for path in files {
                check_cancel(cancel)?;
                let imported = import::read_file(path, opts.on_bad_row == OnBadRow::Stop)?;
                let format = imported
                    .format
                    .expect("read_file detects a format or fails");
                notes.push(format!(
                    "{}: {}, {} rows, {} usable",
                    path.file_name().map_or_else(
                        || path.display().to_string(),
                        |n| n.to_string_lossy().into_owned()
                    ),
                    format.describe(),
                    imported.rows,
                    imported.examples.len()
                ));
                sources.push(SourceInfo {
                    name: path.display().to_string(),
                    sha256: file_sha256(path)?,
                    format: Some(format),
                    rows: imported.rows,
                    examples: imported.examples.len(),
                });
                stats.bad_rows += imported.bad.len();
                bad_rows.extend(imported.bad);
                let total = imported.examples.len() as u64;
                for (chunk_no, chunk) in imported.examples.chunks(BATCH).enumerate() {
                    check_cancel(cancel)?;
                    // Render (sequential; minijinja is fast), then tokenise the batch in parallel.
                    let mut rendered: Vec<(usize, String, ByteSpans)> = Vec::new();
                    for (line, ex) in chunk {
                        match ex {
                            Example::Chat(msgs) => match chat::render(template, msgs) {
                                Ok(r) => {
                                    let spans = match opts.loss_on {
                                        LossOn::Assistant => r.spans,
                                        LossOn::All => vec![(0, r.text.len())],
                                    };
                                    rendered.push((*line, r.text, spans));
                                }
                                Err(reason) => {
                                    let bad = BadRow {
                                        file: path.display().to_string(),
                                        line: *line,
                                        reason,
                                    };
                                    if opts.on_bad_row == OnBadRow::Stop {
                                        return Err(DatasetError::BadRow(bad));
                                    }
                                    stats.bad_rows += 1;
                                    bad_rows.push(bad);
                                }
                            },
                            Example::Text(t) => {
                                // Plain text: BOS as the tokenizer adds it, EOS after, all trained.
                                let mut text = String::new();
                                if let Some(b) = tok.bos_token().filter(|_| adds_bos) {
                                    text.push_str(b);
                                }
                                let start = text.len();
                                text.push_str(t);
                                if let Some(e) = tok.eos_token() {
                                    text.push_str(e);
                                }
                                let len = text.len();
                                rendered.push((*line, text, vec![(start, len)]));
                            }
                        }
                    }
                    let texts = rendered.into_iter().map(|(_, t, s)| (t, s)).collect();
                    for record in encode_examples(tok, texts, opts.seq_len, bos, &mut stats)?
                        .into_iter()
                        .flatten()
                    {
                        let key = Sha256::digest(record.text.as_bytes()).into();
                        built.push(Built {
                            key,
                            record,
                            pair: None,
                        });
                    }
                    let done = ((chunk_no + 1) * BATCH).min(total as usize) as u64;
                    sink.emit(JobEvent::progress(
                        done,
                        total,
                        "examples",
                        Some(path.display().to_string()),
                    ));
                }
            }
            stats.split_unit = "example".into();
        }
        (Mode::Pretrain, Inputs::Documents(docs)) => {
            let mut seen = HashSet::new();
            let docs: Vec<&TextSource> = docs
                .iter()
                .filter(|d| !d.text.trim().is_empty())
                .filter(|d| seen.insert(d.sha256.clone()))
                .collect();
            if docs.is_empty() {
                return Err(DatasetError::Empty(
                    "no document has text (extract the project's documents first)".into(),
                ));
            }
            // Split by document when there are enough of them, else by window.
            let by_doc = opts.val_fraction > 0.0 && docs.len() as f64 * opts.val_fraction >= 2.0;
            stats.split_unit = if by_doc { "document" } else { "window" }.into();
            let stride = opts.stride.unwrap_or(opts.seq_len);
            let streams = tokenize_documents(
                tok,
                &docs,
                |d| {
                    usize::from(by_doc && is_val(opts.seed, d.sha256.as_bytes(), opts.val_fraction))
                },
                sink,
                cancel,
            )?;
            for d in &docs {
                sources.push(SourceInfo {
                    name: d.name.clone(),
                    sha256: d.sha256.clone(),
                    format: None,
                    rows: 0,
                    examples: 0,
                });
            }
            for (which, stream) in streams.iter().enumerate() {
                for Window {
                    start,
                    end,
                    loss_from,
                } in pack::windows(stream, opts.seq_len, stride, opts.keep_last_partial)
                {
                    let ids: Vec<u32> = stream[start..end].iter().map(|t| t.id).collect();
                    let mask: Vec<u8> = stream[start..end]
                        .iter()
                        .enumerate()
                        .map(|(i, t)| u8::from(start + i >= loss_from && !t.no_loss))
                        .collect();
                    let text = tok.decode(&ids, false)?;
                    let context = tok.decode(&ids[..loss_from - start], false)?;
                    let first = context.chars().count();
                    let spans = vec![(first, text.chars().count())];
                    let mut key = Sha256::new();
                    key.update((which as u64).to_le_bytes());
                    key.update((start as u64).to_le_bytes());
                    let mut key: [u8; 32] = key.finalize().into();
                    if by_doc {
                        key[0] = which as u8; // the document already decided
                    }
                    built.push(Built {
                        key,
                        record: Record {
                            ids,
                            mask,
                            text,
                            spans,
                            source: None,
                        },
                        pair: None,
                    });
                }
            }
            notes.push(format!(
                "{} documents packed into windows of {} tokens (stride {stride})",
                docs.len(),
                opts.seq_len
            ));
        }
        (Mode::Qa, Inputs::Pairs(qa)) => {
            let template = tok.require_chat_template()?;
            let mut documents: Vec<&str> = qa.pairs.iter().map(|p| p.document.as_str()).collect();
            documents.sort_unstable();
            documents.dedup();
            // Pairs of one passage (or of one document, when there are enough) share a split, so
            // validation never asks about a passage training saw.
            let by_doc =
                opts.val_fraction > 0.0 && documents.len() as f64 * opts.val_fraction >= 2.0;
            stats.split_unit = if by_doc { "document" } else { "passage" }.into();
            for d in &qa.report.documents {
                sources.push(SourceInfo {
                    name: d.document.clone(),
                    sha256: d.sha256.clone(),
                    format: None,
                    rows: d.passages,
                    examples: d.kept,
                });
            }
            let mut seen = HashSet::new();
            let total = qa.pairs.len() as u64;
            for (chunk_no, chunk) in qa.pairs.chunks(BATCH).enumerate() {
                check_cancel(cancel)?;
                let mut rendered: Vec<(usize, String, ByteSpans)> = Vec::new();
                for (k, pair) in chunk.iter().enumerate() {
                    let msgs = [
                        Message::new("user", &pair.question),
                        Message::new("assistant", &pair.answer),
                    ];
                    match chat::render(template, &msgs) {
                        Ok(r) => {
                            let spans = match opts.loss_on {
                                LossOn::Assistant => r.spans,
                                LossOn::All => vec![(0, r.text.len())],
                            };
                            rendered.push((chunk_no * BATCH + k, r.text, spans));
                        }
                        Err(reason) => {
                            *stats
                                .dropped
                                .entry(format!("the chat template failed: {reason}"))
                                .or_default() += 1;
                        }
                    }
                }
                let which: Vec<usize> = rendered.iter().map(|(i, _, _)| *i).collect();
                let texts = rendered.into_iter().map(|(_, t, s)| (t, s)).collect();
                let records = encode_examples(tok, texts, opts.seq_len, bos, &mut stats)?;
                for (i, record) in which.into_iter().zip(records) {
                    let Some(record) = record else { continue };
                    if opts.dedup && !seen.insert(Sha256::digest(record.text.as_bytes())) {
                        stats.duplicates += 1;
                        continue;
                    }
                    let pair = &qa.pairs[i];
                    let mut key: [u8; 32] = if by_doc {
                        Sha256::digest(pair.document.as_bytes()).into()
                    } else {
                        Sha256::digest(qa.passages[pair.passage].sha256.as_bytes()).into()
                    };
                    if by_doc {
                        key[0] = u8::from(is_val(
                            opts.seed,
                            pair.document.as_bytes(),
                            opts.val_fraction,
                        ));
                    }
                    built.push(Built {
                        key,
                        record,
                        pair: Some(i),
                    });
                }
                let done = ((chunk_no + 1) * BATCH).min(total as usize) as u64;
                sink.emit(JobEvent::progress(done, total, "pairs", None));
            }
            let r = &qa.report;
            notes.push(format!(
                "{} documents, {} passages: {} pairs made by {}, {} kept{}",
                r.documents.len(),
                r.total.passages,
                r.total.generated,
                r.generator,
                r.total.kept,
                if r.total.from_cache > 0 {
                    format!(" ({} passages from the cache)", r.total.from_cache)
                } else {
                    String::new()
                }
            ));
        }
        (Mode::Qa, _) => {
            return Err(DatasetError::Invalid(
                "question-answer mode makes its pairs from the project's documents".into(),
            ))
        }
        (_, Inputs::Pairs(_)) => {
            return Err(DatasetError::Invalid(
                "question-answer pairs are built in question-answer mode".into(),
            ))
        }
        (Mode::Pretrain, Inputs::Files(_)) => {
            return Err(DatasetError::Invalid(
                "pretraining reads the project's extracted documents, not instruction files".into(),
            ))
        }
        (Mode::Instruct, Inputs::Documents(_)) => {
            return Err(DatasetError::Invalid(
                "instruction mode needs an instruction file (--input FILE)".into(),
            ))
        }
    }

    // Duplicates (instruct: same rendered text).
    if opts.dedup && opts.mode == Mode::Instruct {
        let mut seen = HashSet::new();
        let before = built.len();
        built.retain(|b| seen.insert(b.key));
        stats.duplicates = before - built.len();
    }
    if built.is_empty() {
        return Err(DatasetError::Empty(format!(
            "no usable example ({} bad rows; dropped: {:?})",
            stats.bad_rows, stats.dropped
        )));
    }

    // Write under a temporary name, then rename into place.
    let dest = datasets_dir.join(id);
    if dest.exists() {
        return Err(DatasetError::Invalid(format!(
            "{} already exists",
            dest.display()
        )));
    }
    // About 8 bytes a token as JSON (ids and mask) and some per example, checked against the
    // disk first (see doctune_core::space); a write that still runs out of space removes the
    // staged folder, so no half dataset is ever left.
    let estimate: u64 = built
        .iter()
        .map(|b| b.record.ids.len() as u64 * 8 + 256)
        .sum::<u64>()
        + (1 << 20);
    doctune_core::space::ensure_room(datasets_dir, estimate, "the dataset")
        .map_err(io(datasets_dir))?;
    let tmp = StagedDir::new_in(datasets_dir, id).map_err(io(datasets_dir))?;
    let staged = DatasetDir::at(tmp.path());
    let train_path = staged.split_path(Split::Train);
    let val_path = staged.split_path(Split::Val);
    let mut train = BufWriter::new(std::fs::File::create(&train_path).map_err(io(&train_path))?);
    let mut val = BufWriter::new(std::fs::File::create(&val_path).map_err(io(&val_path))?);
    let mut kept_pairs = Vec::new();
    for b in &mut built {
        let to_val = match stats.split_unit.as_str() {
            "document" => b.key[0] == 1,
            _ => is_val(opts.seed, &b.key, opts.val_fraction),
        };
        if let (Some(i), Inputs::Pairs(qa)) = (b.pair, inputs) {
            let mut pair = qa.pairs[i].clone();
            pair.split = Some(if to_val { "val" } else { "train" }.into());
            b.record.source = Some(RecordSource {
                pair: kept_pairs.len(),
                passage: pair.passage,
            });
            kept_pairs.push(pair);
        }
        let n = b.record.ids.len() as u64;
        let line =
            serde_json::to_string(&b.record).map_err(|e| DatasetError::Invalid(e.to_string()))?;
        if to_val {
            stats.val_examples += 1;
            stats.val_tokens += n;
            writeln!(val, "{line}").map_err(io(&val_path))?;
        } else {
            stats.train_examples += 1;
            stats.train_tokens += n;
            stats.trained_tokens += b.record.mask.iter().map(|&m| u64::from(m)).sum::<u64>();
            let bin = (b.record.ids.len() / stats.bin_width).min(stats.histogram.len() - 1);
            stats.histogram[bin] += 1;
            writeln!(train, "{line}").map_err(io(&train_path))?;
        }
    }
    for (w, p) in [(train, &train_path), (val, &val_path)] {
        w.into_inner().map_err(|e| DatasetError::Io {
            path: p.clone(),
            source: e.into_error(),
        })?;
    }
    if let Inputs::Pairs(qa) = inputs {
        write_lines(&staged.pairs_path(), &kept_pairs)?;
        write_lines(&staged.passages_path(), &qa.passages)?;
    }
    if stats.train_examples == 0 {
        return Err(DatasetError::Empty(
            "every example went to validation; lower the validation fraction".into(),
        ));
    }

    let tokenizer_sha256 = file_sha256(&model_dir.join("tokenizer.json"))?;
    let chat_template_sha256 = tok
        .chat_template()
        .map(|t| sha256_hex(t.source().as_bytes()));
    let listed: Vec<BadRow> = bad_rows.into_iter().take(MAX_LISTED_BAD_ROWS).collect();
    let meta = DatasetMeta {
        schema: 1,
        id: id.to_string(),
        created_at: doctune_core::now_rfc3339(),
        model: model_dir.display().to_string(),
        tokenizer_sha256,
        chat_template_sha256,
        options: opts.clone(),
        sources,
        stats,
        bad_rows: listed,
        notes,
        qa: match inputs {
            Inputs::Pairs(qa) => Some(qa.report.clone()),
            _ => None,
        },
    };
    let meta_path = staged.meta_path();
    doctune_core::write_json_atomic(&meta_path, &meta).map_err(io(&meta_path))?;
    let dest = tmp.commit(id).map_err(io(&dest))?;
    Ok(BuildReport { dir: dest, meta })
}
