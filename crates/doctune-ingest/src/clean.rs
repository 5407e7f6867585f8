//! Cleaning: what every paragraph goes through (NFC, no control characters, one space between
//! words), and the repairs PDF text needs (ligatures, hyphenation at line ends, page headers and
//! footers repeated on most pages).

use std::collections::HashMap;
use unicode_normalization::UnicodeNormalization;

/// One clean paragraph: NFC, control and zero-width characters removed, any run of whitespace
/// (line breaks included) made one space, trimmed.
pub fn paragraph(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut space = false;
    for c in raw.nfc() {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() || matches!(c, '\u{200B}' | '\u{FEFF}' | '\u{00AD}') {
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// Replaces the Latin ligature code points (U+FB00–U+FB06) with their letters.
pub fn unligature(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| ('\u{FB00}'..='\u{FB06}').contains(&c)) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\u{FB00}' => out.push_str("ff"),
            '\u{FB01}' => out.push_str("fi"),
            '\u{FB02}' => out.push_str("fl"),
            '\u{FB03}' => out.push_str("ffi"),
            '\u{FB04}' => out.push_str("ffl"),
            '\u{FB05}' | '\u{FB06}' => out.push_str("st"),
            c => out.push(c),
        }
    }
    out.into()
}

/// Joins the lines of one PDF paragraph: a word broken with a hyphen at a line end
/// ("exam-" / "ple") is joined ("example"); other line breaks become spaces.
pub fn join_lines(lines: &[&str]) -> String {
    let mut out = String::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let starts_lower = line.chars().next().is_some_and(char::is_lowercase);
        let hyphenated = out.ends_with('-')
            && out.chars().rev().nth(1).is_some_and(char::is_alphabetic)
            && starts_lower;
        if hyphenated {
            // "exam-" + "ple" → "example"; but a compound ("state-of-the-" + "art") keeps it.
            let word = out.rsplit(' ').next().unwrap_or("");
            if !word[..word.len() - 1].contains('-') {
                out.pop();
            }
        } else if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(line);
    }
    out
}

/// Removes lines that repeat at the top or bottom of most pages (running headers, footers, page
/// numbers). A line counts as repeated when, with its digits ignored, it is among the first or
/// last two lines of at least 60 % of the pages (and of at least 3 pages).
pub fn strip_running_lines(pages: &mut [Vec<String>]) {
    if pages.len() < 3 {
        return;
    }
    let key = |l: &str| -> String {
        l.chars()
            .filter(|c| !c.is_ascii_digit() && !c.is_whitespace())
            .collect::<String>()
            .to_lowercase()
    };
    let edge = |p: &Vec<String>| -> Vec<usize> {
        let idx: Vec<usize> = (0..p.len()).filter(|&i| !p[i].trim().is_empty()).collect();
        let mut e: Vec<usize> = idx
            .iter()
            .take(2)
            .chain(idx.iter().rev().take(2))
            .copied()
            .collect();
        e.sort_unstable();
        e.dedup();
        e
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    for p in pages.iter() {
        let mut seen: Vec<String> = edge(p).into_iter().map(|i| key(&p[i])).collect();
        seen.sort();
        seen.dedup();
        for k in seen {
            *counts.entry(k).or_default() += 1;
        }
    }
    let threshold = (pages.len() * 6).div_ceil(10).max(3);
    for p in pages.iter_mut() {
        let drop: Vec<usize> = edge(p)
            .into_iter()
            .filter(|&i| counts.get(&key(&p[i])).is_some_and(|&n| n >= threshold))
            .collect();
        for i in drop.into_iter().rev() {
            p.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_are_nfc_and_single_spaced() {
        // "e" + combining acute → "é"
        assert_eq!(
            paragraph("  cafe\u{301}\n\t au\u{200B}  lait\u{7} "),
            "café au lait"
        );
        assert_eq!(paragraph("\u{0}\u{1}"), "");
    }

    #[test]
    fn ligatures_and_hyphens() {
        assert_eq!(unligature("e\u{FB03}cient \u{FB01}le"), "efficient file");
        assert_eq!(
            join_lines(&["The exam-", "ple shows", "well-", "Known"]),
            "The example shows well- Known"
        );
        assert_eq!(join_lines(&["state-of-the-", "art"]), "state-of-the-art");
    }

    #[test]
    fn running_headers_and_page_numbers_are_removed() {
        let mut pages: Vec<Vec<String>> = (1..=5)
            .map(|n| {
                vec![
                    "Annual Report 2025".to_string(),
                    format!("Body text of page {n} that is unique {}", "x".repeat(n)),
                    format!("Page {n} of 5"),
                ]
            })
            .collect();
        pages[2].insert(1, "A line that repeats only once".into());
        strip_running_lines(&mut pages);
        for (i, p) in pages.iter().enumerate() {
            assert!(
                p.iter()
                    .all(|l| !l.starts_with("Annual") && !l.starts_with("Page ")),
                "{p:?}"
            );
            assert!(p
                .iter()
                .any(|l| l.starts_with(&format!("Body text of page {}", i + 1))));
        }
        assert!(pages[2].contains(&"A line that repeats only once".to_string()));
    }
}
