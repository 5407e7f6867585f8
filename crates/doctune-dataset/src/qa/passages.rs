//! Documents cut into passages by tokens, at the boundaries extraction keeps.

/// A document to make pairs from: its extracted text (paragraphs separated by a blank line) and
/// its sections as extraction found them.
#[derive(Debug, Clone)]
pub struct QaSource {
    pub name: String,
    /// The document's sha256 (the build's sources list it).
    pub sha256: String,
    pub text: String,
    pub sections: Vec<QaSection>,
}

/// A heading, chapter, page or sheet of a [`QaSource`], as character offsets into its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QaSection {
    pub label: String,
    /// Whether the section is a structural boundary (a heading or chapter) that passages do not
    /// cross; pages and sheets only label.
    pub boundary: bool,
    pub start: usize,
    pub end: usize,
}

/// How passages are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassageOptions {
    /// At most this many tokens per passage (a single word longer than that is cut by
    /// characters).
    pub max_tokens: usize,
    /// Tokens of the previous passage's end repeated at the start of the next one in the same
    /// section (whole paragraphs or sentences, never more than this).
    pub overlap_tokens: usize,
}

impl Default for PassageOptions {
    fn default() -> Self {
        Self {
            max_tokens: 384,
            overlap_tokens: 48,
        }
    }
}

/// One passage: where it is (document, section, character span) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passage {
    pub doc: String,
    pub section: Option<String>,
    /// Character offsets into the document's text (`text` is exactly that span).
    pub start: usize,
    pub end: usize,
    pub text: String,
    pub tokens: usize,
}

/// A piece passages are built from: a paragraph, or a sentence or word run of a paragraph too
/// long for one passage. Byte range into the text.
#[derive(Debug, Clone, Copy)]
struct Piece {
    start: usize,
    end: usize,
    tokens: usize,
}

/// Cuts `doc` into passages of at most `opts.max_tokens` tokens (`count` counts a string's
/// tokens: the generator's tokenizer in the product, a word count in tests).
pub fn passages(
    doc: &QaSource,
    opts: PassageOptions,
    count: &dyn Fn(&str) -> usize,
) -> Vec<Passage> {
    let text = doc.text.as_str();
    let max = opts.max_tokens.max(1);
    // Character offset → byte offset, for the sections (extraction counts characters).
    let char_starts: Vec<usize> = text
        .char_indices()
        .map(|(b, _)| b)
        .chain([text.len()])
        .collect();
    let byte_of = |c: usize| char_starts[c.min(char_starts.len() - 1)];
    let char_of = |b: usize| char_starts.partition_point(|&x| x < b);
    let mut bounds: Vec<usize> = doc
        .sections
        .iter()
        .filter(|s| s.boundary)
        .map(|s| byte_of(s.start))
        .chain([0, text.len()])
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let pieces = pieces(text, w[0], w[1], max, count);
        let mut i = 0;
        while i < pieces.len() {
            // Greedy: as many pieces as fit.
            let mut j = i;
            let mut tokens = 0;
            while j < pieces.len() && (j == i || tokens + pieces[j].tokens <= max) {
                tokens += pieces[j].tokens;
                j += 1;
            }
            let (s, e) = (pieces[i].start, pieces[j - 1].end);
            let (cs, ce) = (char_of(s), char_of(e));
            out.push(Passage {
                doc: doc.name.clone(),
                section: section_at(doc, cs),
                start: cs,
                end: ce,
                text: text[s..e].to_string(),
                tokens: count(&text[s..e]),
            });
            if j >= pieces.len() {
                break;
            }
            // The next passage starts with the last pieces of this one that fit the overlap,
            // and always moves forward by at least one piece.
            let mut k = j;
            let mut carried = 0;
            while k > i + 1 && carried + pieces[k - 1].tokens <= opts.overlap_tokens {
                carried += pieces[k - 1].tokens;
                k -= 1;
            }
            i = k;
        }
    }
    out
}

/// The most specific section containing character offset `c` (the one starting last).
fn section_at(doc: &QaSource, c: usize) -> Option<String> {
    doc.sections
        .iter()
        .filter(|s| s.start <= c && c < s.end.max(s.start + 1))
        .max_by_key(|s| (s.start, s.boundary))
        .map(|s| s.label.clone())
}

/// The paragraphs of `text[from..to]`, each cut into sentences (and those into word runs) when
/// longer than `max` tokens.
fn pieces(
    text: &str,
    from: usize,
    to: usize,
    max: usize,
    count: &dyn Fn(&str) -> usize,
) -> Vec<Piece> {
    let mut out = Vec::new();
    let region = &text[from..to];
    let mut pos = 0;
    for para in region.split("\n\n") {
        let start = from + pos;
        pos += para.len() + 2;
        let trimmed = para.trim();
        if trimmed.is_empty() {
            continue;
        }
        let s = start + (para.len() - para.trim_start().len());
        let e = s + trimmed.len();
        split_to_fit(text, s, e, max, count, 0, &mut out);
    }
    out
}

/// Pushes `text[s..e]` as one piece if it fits, else its sentences (level 0), words (level 1)
/// or characters (level 2), each split further if needed.
fn split_to_fit(
    text: &str,
    s: usize,
    e: usize,
    max: usize,
    count: &dyn Fn(&str) -> usize,
    level: u8,
    out: &mut Vec<Piece>,
) {
    let tokens = count(&text[s..e]);
    if tokens <= max || level > 2 {
        out.push(Piece {
            start: s,
            end: e,
            tokens,
        });
        return;
    }
    let part = &text[s..e];
    // Cut points (byte offsets within `part`) after which a new unit starts.
    let cuts: Vec<usize> = match level {
        0 => part
            .char_indices()
            .filter(|&(i, c)| {
                matches!(c, '.' | '!' | '?' | ';')
                    && part[i + c.len_utf8()..].starts_with(char::is_whitespace)
            })
            .map(|(i, c)| i + c.len_utf8())
            .collect(),
        1 => part
            .char_indices()
            .filter(|&(_, c)| c.is_whitespace())
            .map(|(i, _)| i)
            .collect(),
        _ => part.char_indices().map(|(i, _)| i).skip(1).collect(),
    };
    if cuts.is_empty() {
        split_to_fit(text, s, e, max, count, level + 1, out);
        return;
    }
    // Units between cuts, packed greedily up to `max` tokens (a unit too long on its own goes a
    // level down).
    let mut units = Vec::new();
    let mut prev = 0;
    for c in cuts.into_iter().chain([part.len()]) {
        let (us, ue) = trim_range(part, prev, c);
        if us < ue {
            units.push((s + us, s + ue));
        }
        prev = c;
    }
    let mut run: Option<(usize, usize)> = None;
    for (us, ue) in units {
        let candidate = run.map_or((us, ue), |(rs, _)| (rs, ue));
        if count(&text[candidate.0..candidate.1]) <= max {
            run = Some(candidate);
            continue;
        }
        if let Some((rs, re)) = run.take() {
            out.push(Piece {
                start: rs,
                end: re,
                tokens: count(&text[rs..re]),
            });
        }
        if count(&text[us..ue]) <= max {
            run = Some((us, ue));
        } else {
            split_to_fit(text, us, ue, max, count, level + 1, out);
        }
    }
    if let Some((rs, re)) = run {
        out.push(Piece {
            start: rs,
            end: re,
            tokens: count(&text[rs..re]),
        });
    }
}

/// `part[a..b]` without surrounding whitespace.
fn trim_range(part: &str, a: usize, b: usize) -> (usize, usize) {
    let sub = &part[a..b];
    let start = a + (sub.len() - sub.trim_start().len());
    (start, start + sub.trim().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn doc(text: &str, sections: Vec<QaSection>) -> QaSource {
        QaSource {
            sha256: String::new(),
            name: "guide.md".into(),
            text: text.into(),
            sections,
        }
    }

    #[test]
    fn paragraphs_are_packed_up_to_the_limit_and_overlap_by_whole_paragraphs() {
        let text = "one two three.\n\nfour five six.\n\nseven eight nine.\n\nten eleven twelve.";
        let p = passages(
            &doc(text, vec![]),
            PassageOptions {
                max_tokens: 6,
                overlap_tokens: 3,
            },
            &words,
        );
        let texts: Vec<&str> = p.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "one two three.\n\nfour five six.",
                "four five six.\n\nseven eight nine.",
                "seven eight nine.\n\nten eleven twelve."
            ]
        );
        for x in &p {
            // The span is the text, in characters.
            let span: String = text.chars().skip(x.start).take(x.end - x.start).collect();
            assert_eq!(span, x.text);
            assert!(x.tokens <= 6);
        }
    }

    #[test]
    fn passages_never_cross_a_heading_and_carry_the_innermost_label() {
        let text = "Intro text here.\n\nInstall\n\nRun the installer now.";
        let heading = text.find("Install").unwrap();
        let sections = vec![
            QaSection {
                label: "page 1".into(),
                boundary: false,
                start: 0,
                end: text.chars().count(),
            },
            QaSection {
                label: "Install".into(),
                boundary: true,
                start: heading,
                end: text.chars().count(),
            },
        ];
        let p = passages(
            &doc(text, sections),
            PassageOptions {
                max_tokens: 100,
                overlap_tokens: 10,
            },
            &words,
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].text, "Intro text here.");
        assert_eq!(p[0].section.as_deref(), Some("page 1"));
        assert_eq!(p[1].text, "Install\n\nRun the installer now.");
        assert_eq!(p[1].section.as_deref(), Some("Install"));
    }

    #[test]
    fn a_long_paragraph_is_cut_at_sentences_then_words_and_offsets_count_characters() {
        let text = "Größe eins zwei drei. Vier fünf sechs sieben acht neun zehn elf zwölf. Ende.";
        let p = passages(
            &doc(text, vec![]),
            PassageOptions {
                max_tokens: 4,
                overlap_tokens: 0,
            },
            &words,
        );
        assert!(p.len() >= 4, "{p:?}");
        for x in &p {
            assert!(x.tokens <= 4, "{x:?}");
            let span: String = text.chars().skip(x.start).take(x.end - x.start).collect();
            assert_eq!(span, x.text);
        }
        assert_eq!(p[0].text, "Größe eins zwei drei.");
        assert!(p.last().unwrap().text.ends_with("zwölf. Ende."));
        // Every word is in some passage, in order.
        let joined: Vec<&str> = p.iter().flat_map(|x| x.text.split_whitespace()).collect();
        assert_eq!(joined, text.split_whitespace().collect::<Vec<_>>());
    }

    #[test]
    fn empty_and_blank_documents_give_no_passages() {
        let o = PassageOptions::default();
        assert!(passages(&doc("", vec![]), o, &words).is_empty());
        assert!(passages(&doc("\n\n  \n\n", vec![]), o, &words).is_empty());
    }
}
