//! What reaches the terminal. File names, sheet names, EPUB hrefs and other strings a document
//! controls are printed with their control characters escaped, so a name carrying an escape
//! sequence (`ESC ] … BEL`, cursor movement, a title change) or a bidirectional override shows as
//! text instead of acting on the terminal. Every `println!`/`eprintln!` of the CLI goes through
//! the macros here (declared before the other modules, so they shadow the standard ones): each
//! line is filtered with [`line`]; values that must stay on one line use [`value`]. Characters
//! are written as JSON escapes (`\u001b`), so `--json` output stays valid JSON through the same
//! filter (serde escapes C0 controls itself but leaves C1 controls and bidi overrides raw).

/// Characters that act on a terminal or reorder text: C0 and C1 controls, DEL, and the Unicode
/// bidirectional embeddings, overrides and isolates.
fn acts_on_terminal(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if acts_on_terminal(c) && !keep(c) {
            // JSON's escape (all such characters are in the BMP): readable, and still valid
            // JSON when the line is `--json` output (serde leaves C1 and bidi characters raw).
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A printed line: every such character escaped except line breaks and tabs.
pub fn line(s: &str) -> String {
    escape(s, |c| c == '\n' || c == '\t')
}

/// One value from a file, on one line: every such character escaped, line breaks too.
pub fn value(s: &str) -> String {
    escape(s, |_| false)
}

/// `println!` with [`line`] applied.
macro_rules! println {
    () => { std::println!() };
    ($($t:tt)*) => { std::println!("{}", $crate::term::line(&format!($($t)*))) };
}

/// `eprintln!` with [`line`] applied.
macro_rules! eprintln {
    () => { std::eprintln!() };
    ($($t:tt)*) => { std::eprintln!("{}", $crate::term::line(&format!($($t)*))) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_sequences_are_shown_not_sent() {
        let name = "report\u{1b}]0;pwned\u{7}.pdf";
        assert_eq!(super::line(name), "report\\u001b]0;pwned\\u0007.pdf");
        assert_eq!(super::line("a\n\tb"), "a\n\tb");
        assert_eq!(
            super::value("a\nb\u{9b}c\u{202e}d"),
            "a\\u000ab\\u009bc\\u202ed"
        );
        let json =
            serde_json::to_string(&serde_json::json!({"n": "x\u{9b}\u{202e}\u{1b}"})).unwrap();
        let v: serde_json::Value = serde_json::from_str(&super::line(&json)).unwrap();
        assert_eq!(v["n"], "x\u{9b}\u{202e}\u{1b}");
        assert_eq!(super::line("plain é 名前"), "plain é 名前");
    }
}
