//! Continued pretraining: documents tokenised as `tokenizer(text)` tokenises them (BOS where the
//! model wants it), each followed by EOS, concatenated, and cut into windows of `seq_len` tokens.
//!
//! A window starts where the previous one started plus `stride` (`seq_len` by default), moved
//! back to the nearest paragraph or sentence start within the last eighth of the stride, so
//! windows begin at the start of a sentence where the text allows. Tokens a window shares with
//! the previous one (the overlap a shorter stride or a moved start creates) are context only:
//! they carry no loss, so no token is trained twice. BOS tokens carry no loss either (nothing
//! predicts them). The last, shorter window is kept or dropped by option.

/// A token of the packed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamToken {
    pub id: u32,
    /// A window may start here (a document, paragraph or sentence start).
    pub boundary: bool,
    /// Never a training target (BOS).
    pub no_loss: bool,
}

/// One window: `[start, end)` of the stream and the first position that carries loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: usize,
    pub end: usize,
    pub loss_from: usize,
}

/// Marks, for each char of `text`, whether a sentence or paragraph starts there.
pub fn boundary_chars(text: &str) -> Vec<bool> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = vec![false; chars.len() + 1];
    let mut i = 0;
    // The first non-space character of the document starts a paragraph.
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    if i < chars.len() {
        out[i] = true;
    }
    for j in 0..chars.len() {
        let c = chars[j];
        let ends_sentence = matches!(c, '.' | '!' | '?' | '。' | '！' | '？');
        let paragraph = c == '\n' && j + 1 < chars.len() && chars[j + 1] == '\n';
        if ends_sentence || paragraph {
            let mut k = j + 1;
            // Closing quotes/brackets stay with the sentence.
            while ends_sentence
                && k < chars.len()
                && matches!(chars[k], '"' | '\'' | ')' | ']' | '”' | '’')
            {
                k += 1;
            }
            let ws_start = k;
            while k < chars.len() && chars[k].is_whitespace() {
                k += 1;
            }
            if k < chars.len() && (k > ws_start || !ends_sentence) {
                out[k] = true;
            }
        }
    }
    out
}

/// Cuts the stream into windows (see the module docs).
pub fn windows(
    stream: &[StreamToken],
    seq_len: usize,
    stride: usize,
    keep_last: bool,
) -> Vec<Window> {
    let n = stream.len();
    let mut out = Vec::new();
    if n == 0 || seq_len == 0 {
        return out;
    }
    let stride = stride.clamp(1, seq_len);
    let slack = (stride / 8).max(1);
    let mut start = 0;
    let mut trained_until = 0; // stream positions before this already carried loss
    loop {
        let end = (start + seq_len).min(n);
        if end - start < seq_len && !keep_last && !out.is_empty() {
            break;
        }
        if end - start < 2 {
            break; // a single token predicts nothing
        }
        let loss_from = trained_until.max(start);
        if loss_from < end {
            out.push(Window {
                start,
                end,
                loss_from,
            });
        }
        trained_until = end;
        if end == n {
            break;
        }
        let ideal = start + stride;
        let lo = ideal.saturating_sub(slack).max(start + 1);
        let snapped = (lo..=ideal.min(n - 1)).rev().find(|&p| stream[p].boundary);
        start = snapped.unwrap_or(ideal);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(n: usize, boundaries: &[usize]) -> Vec<StreamToken> {
        (0..n)
            .map(|i| StreamToken {
                id: i as u32,
                boundary: boundaries.contains(&i),
                no_loss: false,
            })
            .collect()
    }

    #[test]
    fn boundaries_are_sentence_and_paragraph_starts() {
        let text = "One two. Three?\n\nFour \"five.\" Six 3.5 seven";
        let b = boundary_chars(text);
        let starts: Vec<usize> = b
            .iter()
            .enumerate()
            .filter(|(_, &x)| x)
            .map(|(i, _)| i)
            .collect();
        let at = |i: usize| text.chars().nth(i).unwrap();
        assert_eq!(starts.iter().map(|&i| at(i)).collect::<String>(), "OTFS");
    }

    #[test]
    fn windows_tile_the_stream_without_training_a_token_twice() {
        let s = stream(100, &[]);
        let w = windows(&s, 32, 32, true);
        assert_eq!(
            w.iter()
                .map(|w| (w.start, w.end, w.loss_from))
                .collect::<Vec<_>>(),
            vec![(0, 32, 0), (32, 64, 32), (64, 96, 64), (96, 100, 96)]
        );
        assert_eq!(windows(&s, 32, 32, false).len(), 3);
        // Overlap: stride 16 → each window's first 16 tokens are context only.
        let w = windows(&s, 32, 16, false);
        assert!(w.iter().skip(1).all(|w| w.loss_from == w.start + 16));
        let trained: usize = w.iter().map(|w| w.end - w.loss_from).sum();
        assert_eq!(trained, w.last().unwrap().end);
    }

    #[test]
    fn windows_start_at_sentences_when_one_is_near() {
        // A sentence starts at 30: the second window starts there (within 32/8 = 4 of 32).
        let s = stream(100, &[30, 50]);
        let w = windows(&s, 32, 32, true);
        assert_eq!((w[1].start, w[1].loss_from), (30, 32));
        // 50 is not within the slack of 62: the third window starts at 62.
        assert_eq!(w[2].start, 62);
    }
}
