//! Text generation: prefill, then one token at a time through the KV cache, with greedy or
//! sampled decoding as transformers' `generate` does it (repetition penalty, then temperature,
//! top-k, top-p, then a draw from a seeded generator), stopping on a stop token (EOS; the id is
//! kept in `token_ids` as transformers keeps it, and left out of the text), on a stop string (the
//! template's end-of-turn marker; the text is cut before it), at the token limit, or when
//! cancelled. New text is streamed through a callback as soon as it is complete UTF-8 and cannot
//! be the start of a stop string.

use crate::model::CausalLm;
use crate::rng::{seeded, ModelRng};
use crate::ModelError;
use candle_core::{DType, Tensor};
use doctune_core::CancelToken;
use doctune_tokenizer::ModelTokenizer;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sampling {
    /// `None` or 0: greedy (argmax).
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    /// 1.0: off. Above 1 discourages tokens already in the prompt or the output.
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self::greedy()
    }
}

impl Sampling {
    pub fn greedy() -> Self {
        Self {
            temperature: None,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature.is_none_or(|t| t <= 0.0)
    }

    /// Checks the values are in range.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: &str| Err(ModelError::Invalid(m.into()));
        if self.temperature.is_some_and(|t| !t.is_finite() || t < 0.0) {
            return bad("temperature must be a number ≥ 0");
        }
        if self.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return bad("top-p must be in (0, 1]");
        }
        if self.top_k == Some(0) {
            return bad("top-k must be at least 1");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad("repetition penalty must be > 0");
        }
        Ok(())
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StopReason {
    Eos,
    StopString,
    MaxTokens,
    /// The model's context window (`max_position_embeddings`) is full.
    ContextLimit,
    Cancelled,
}

/// Options of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Token ids that end generation (normally [`ModelTokenizer::stop_ids`]).
    pub stop_ids: Vec<u32>,
    /// Strings that end generation (the text is cut before them).
    pub stop_strings: Vec<String>,
}

/// The result of a generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Generation {
    /// Generated ids only (prompt excluded), the stop token included when one ended it.
    pub token_ids: Vec<u32>,
    pub text: String,
    pub stop_reason: StopReason,
    pub prompt_tokens: usize,
    /// Generated tokens per second after the prompt was processed.
    pub tokens_per_sec: f64,
}

/// Applies transformers' logits processors in its order and picks the next token.
pub fn next_token(
    logits: &mut [f32],
    history: &[u32],
    sampling: &Sampling,
    rng: &mut ModelRng,
) -> u32 {
    if sampling.repetition_penalty != 1.0 {
        let p = sampling.repetition_penalty;
        let mut seen = std::collections::HashSet::new();
        for &id in history {
            if seen.insert(id) {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l < 0.0 { *l * p } else { *l / p };
                }
            }
        }
    }
    if sampling.is_greedy() {
        return argmax(logits);
    }
    let t = sampling.temperature.unwrap_or(1.0);
    for l in logits.iter_mut() {
        *l /= t;
    }
    if let Some(k) = sampling.top_k.filter(|&k| k < logits.len()) {
        let mut sorted: Vec<f32> = logits.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[k - 1];
        for l in logits.iter_mut() {
            if *l < kth {
                *l = f32::NEG_INFINITY;
            }
        }
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let sum: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    if let Some(top_p) = sampling.top_p.filter(|&p| p < 1.0) {
        // Keep the smallest set of most likely tokens whose mass reaches top_p (at least one).
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let mut mass = 0.0;
        let mut keep = vec![false; probs.len()];
        for &i in &order {
            keep[i] = true;
            mass += probs[i];
            if mass >= f64::from(top_p) {
                break;
            }
        }
        let mut kept = 0.0;
        for (i, p) in probs.iter_mut().enumerate() {
            if !keep[i] {
                *p = 0.0;
            }
            kept += *p;
        }
        probs.iter_mut().for_each(|p| *p /= kept);
    }
    let r: f64 = rng.random::<f64>();
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            acc += p;
            last = i;
            if r < acc {
                return i as u32;
            }
        }
    }
    last as u32
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Bytes at the end of `text` that could be the start of one of `stops`.
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut hold = 0;
    for s in stops {
        for n in (1..s.len()).rev() {
            if n > hold && s.is_char_boundary(n) && text.ends_with(&s[..n]) {
                hold = n;
                break;
            }
        }
    }
    hold
}

/// Generates from `prompt_ids`, calling `on_text` with each new piece of text.
pub fn generate(
    model: &CausalLm,
    tokenizer: &ModelTokenizer,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    cancel: &CancelToken,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation, ModelError> {
    opts.sampling.validate()?;
    if prompt_ids.is_empty() {
        return Err(ModelError::Invalid("the prompt is empty".into()));
    }
    let limit = model.config().max_position_embeddings.max(prompt_ids.len());
    let max_new = opts
        .max_new_tokens
        .min(limit.saturating_sub(prompt_ids.len()).max(1));
    let mut rng = seeded(opts.sampling.seed);
    let mut cache = model.new_cache();
    let mut history: Vec<u32> = prompt_ids.to_vec();
    let mut out_ids = Vec::new();
    let mut stream = tokenizer.decode_stream(true);
    let mut text = String::new();
    let mut emitted = 0;
    let mut reason = StopReason::MaxTokens;
    let mut input = prompt_ids.to_vec();
    let mut started: Option<Instant> = None;
    for _ in 0..max_new {
        if cancel.is_cancelled() {
            reason = StopReason::Cancelled;
            break;
        }
        let ids = Tensor::new(input.as_slice(), model.device())?.unsqueeze(0)?;
        let logits = model.forward_cached(&ids, &mut cache)?;
        started.get_or_insert_with(Instant::now);
        let mut logits: Vec<f32> = logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let id = next_token(&mut logits, &history, &opts.sampling, &mut rng);
        out_ids.push(id);
        history.push(id);
        input = vec![id];
        if opts.stop_ids.contains(&id) {
            reason = StopReason::Eos;
            break;
        }
        if let Some(piece) = stream.step(id)? {
            text.push_str(&piece);
        }
        if let Some(pos) = opts
            .stop_strings
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(pos);
            reason = StopReason::StopString;
            break;
        }
        let safe = text.len() - held_back(&text, &opts.stop_strings);
        if safe > emitted {
            on_text(&text[emitted..safe]);
            emitted = safe;
        }
    }
    if reason == StopReason::MaxTokens && max_new < opts.max_new_tokens {
        reason = StopReason::ContextLimit;
    }
    if reason != StopReason::StopString {
        // Text the stream held back (an incomplete UTF-8 sequence at the very end).
        text = stream.text()?;
    }
    if text.len() > emitted && text.is_char_boundary(emitted) {
        on_text(&text[emitted..]);
    }
    let generated = out_ids.len().saturating_sub(1);
    let tokens_per_sec = match started {
        Some(t) if generated > 0 => generated as f64 / t.elapsed().as_secs_f64().max(1e-9),
        _ => 0.0,
    };
    Ok(Generation {
        token_ids: out_ids,
        text,
        stop_reason: reason,
        prompt_tokens: prompt_ids.len(),
        tokens_per_sec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(t: f32, k: Option<usize>, p: Option<f32>) -> Sampling {
        Sampling {
            temperature: Some(t),
            top_k: k,
            top_p: p,
            repetition_penalty: 1.0,
            seed: 1,
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut rng = seeded(0);
        let mut l = vec![0.0, 3.0, 3.0, -1.0];
        assert_eq!(next_token(&mut l, &[], &Sampling::greedy(), &mut rng), 1);
    }

    #[test]
    fn repetition_penalty_is_transformers_rule() {
        let mut rng = seeded(0);
        let mut s = Sampling::greedy();
        s.repetition_penalty = 2.0;
        let mut l = vec![1.0, 1.5, -1.0];
        // 1.5 → 0.75 (seen), so token 0 wins; negative logits are multiplied.
        assert_eq!(next_token(&mut l, &[1, 2], &s, &mut rng), 0);
        assert_eq!(l, vec![1.0, 0.75, -2.0]);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_draw() {
        let mut rng = seeded(3);
        for _ in 0..200 {
            let mut l = vec![5.0, 4.9, 0.0, -3.0];
            let id = next_token(&mut l, &[], &sampling(1.0, Some(2), None), &mut rng);
            assert!(id < 2);
            let mut l = vec![0.0, 10.0, 0.0, 0.0];
            assert_eq!(
                next_token(&mut l, &[], &sampling(1.0, None, Some(0.5)), &mut rng),
                1
            );
        }
    }

    #[test]
    fn sampling_is_seeded_and_follows_the_distribution() {
        let draw = |seed| {
            let mut rng = seeded(seed);
            (0..2000)
                .map(|_| {
                    let mut l = vec![0.0f32, (3.0f32).ln()];
                    next_token(&mut l, &[], &sampling(1.0, None, None), &mut rng)
                })
                .collect::<Vec<_>>()
        };
        let a = draw(11);
        assert_eq!(a, draw(11));
        let ones = a.iter().filter(|&&i| i == 1).count() as f64 / a.len() as f64;
        assert!((ones - 0.75).abs() < 0.04, "{ones}");
    }

    #[test]
    fn holds_back_possible_stop_prefixes() {
        let stops = vec!["<|im_end|>".to_string()];
        assert_eq!(held_back("Hello <|im", &stops), 4);
        assert_eq!(held_back("Hello", &stops), 0);
    }

    #[test]
    fn validates_ranges() {
        assert!(sampling(-1.0, None, None).validate().is_err());
        assert!(sampling(1.0, Some(0), None).validate().is_err());
        assert!(sampling(1.0, None, Some(1.5)).validate().is_err());
        assert!(sampling(0.7, Some(40), Some(0.9)).validate().is_ok());
    }
}
