//! RTF to text: a small state machine over groups and control words. Destinations that hold no
//! body text (font/colour/style tables, document info, pictures, objects, headers and footers,
//! and every `\*` destination) are skipped; `\par` ends a paragraph; `\'hh` is a byte in the
//! document's ANSI code page (`\ansicpg`, Windows-1252 by default); `\uN` is a Unicode character
//! followed by `\ucN` fallback characters that are skipped.

use crate::document::{Builder, Document};
use crate::{Format, IngestError, Limits};
use std::path::Path;

const SKIP_DESTINATIONS: [&str; 24] = [
    "fonttbl",
    "colortbl",
    "stylesheet",
    "info",
    "pict",
    "object",
    "header",
    "headerl",
    "headerr",
    "headerf",
    "footer",
    "footerl",
    "footerr",
    "footerf",
    "themedata",
    "colorschememapping",
    "datastore",
    "latentstyles",
    "listtable",
    "listoverridetable",
    "rsidtbl",
    "generator",
    "xmlnstbl",
    "filetbl",
];

#[derive(Clone, Copy)]
struct Group {
    skip: bool,
    uc: usize,
}

pub(crate) fn extract(path: &Path, bytes: &[u8], limits: &Limits) -> Result<Document, IngestError> {
    let mut encoding = encoding_rs::WINDOWS_1252;
    let mut stack: Vec<Group> = Vec::new();
    let mut g = Group { skip: false, uc: 1 };
    let mut out = String::new();
    let mut pending: Vec<u8> = Vec::new(); // \'hh bytes, decoded together (multi-byte code pages)
    let mut to_skip = 0usize; // fallback characters after \uN
    let mut i = 0usize;
    let flush = |pending: &mut Vec<u8>, out: &mut String, enc: &'static encoding_rs::Encoding| {
        if !pending.is_empty() {
            out.push_str(&enc.decode_without_bom_handling(pending).0);
            pending.clear();
        }
    };
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'{' => {
                flush(&mut pending, &mut out, encoding);
                if stack.len() >= limits.max_xml_depth * 4 {
                    return Err(IngestError::limit(
                        path,
                        format!("RTF groups nest deeper than {}", limits.max_xml_depth * 4),
                    ));
                }
                stack.push(g);
                i += 1;
            }
            b'}' => {
                flush(&mut pending, &mut out, encoding);
                g = stack.pop().unwrap_or(g);
                i += 1;
            }
            b'\\' => {
                i += 1;
                let Some(&n) = bytes.get(i) else { break };
                if n.is_ascii_alphabetic() {
                    let start = i;
                    while i < bytes.len() && bytes[i].is_ascii_alphabetic() && i - start < 32 {
                        i += 1;
                    }
                    let word = std::str::from_utf8(&bytes[start..i]).unwrap_or("");
                    let num_start = i;
                    if i < bytes.len() && bytes[i] == b'-' {
                        i += 1;
                    }
                    while i < bytes.len() && bytes[i].is_ascii_digit() && i - num_start < 10 {
                        i += 1;
                    }
                    let param: Option<i64> = std::str::from_utf8(&bytes[num_start..i])
                        .ok()
                        .and_then(|s| s.parse().ok());
                    if i < bytes.len() && bytes[i] == b' ' {
                        i += 1;
                    }
                    if word != "u" {
                        flush(&mut pending, &mut out, encoding);
                    }
                    if SKIP_DESTINATIONS.contains(&word) {
                        g.skip = true;
                        continue;
                    }
                    if g.skip {
                        continue;
                    }
                    match word {
                        "par" | "sect" | "page" => out.push_str("\n\n"),
                        "line" => out.push('\n'),
                        "tab" | "cell" => out.push('\t'),
                        "row" => out.push_str("\n\n"),
                        "ansicpg" => {
                            if let Some(e) = param.and_then(|p| {
                                encoding_rs::Encoding::for_label(format!("windows-{p}").as_bytes())
                            }) {
                                encoding = e;
                            }
                        }
                        "uc" => g.uc = param.unwrap_or(1).clamp(0, 8) as usize,
                        "u" => {
                            flush(&mut pending, &mut out, encoding);
                            let v = param.unwrap_or(0);
                            let v = if v < 0 { v + 65536 } else { v } as u32;
                            out.push(char::from_u32(v).unwrap_or('\u{FFFD}'));
                            to_skip = g.uc;
                        }
                        "emdash" => out.push('—'),
                        "endash" => out.push('–'),
                        "lquote" => out.push('‘'),
                        "rquote" => out.push('’'),
                        "ldblquote" => out.push('“'),
                        "rdblquote" => out.push('”'),
                        "bullet" => out.push('•'),
                        _ => {}
                    }
                } else {
                    i += 1;
                    match n {
                        b'*' => g.skip = true,
                        b'\'' => {
                            let hex = bytes
                                .get(i..i + 2)
                                .and_then(|h| std::str::from_utf8(h).ok());
                            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                            i += 2;
                            if let Some(b) = byte {
                                if to_skip > 0 {
                                    to_skip -= 1;
                                } else if !g.skip {
                                    pending.push(b);
                                }
                            }
                        }
                        b'\\' | b'{' | b'}' if !g.skip => {
                            flush(&mut pending, &mut out, encoding);
                            out.push(n as char);
                        }
                        b'~' if !g.skip => out.push('\u{A0}'),
                        b'_' if !g.skip => out.push('-'),
                        b'\n' | b'\r' if !g.skip => out.push_str("\n\n"),
                        _ => {}
                    }
                }
            }
            b'\r' | b'\n' => i += 1,
            _ => {
                i += 1;
                if to_skip > 0 {
                    to_skip -= 1;
                    continue;
                }
                if !g.skip {
                    pending.push(c);
                }
            }
        }
    }
    flush(&mut pending, &mut out, encoding);
    if !stack.is_empty() {
        return Err(IngestError::corrupt(
            path,
            format!("{} RTF groups are never closed (truncated?)", stack.len()),
        ));
    }
    let mut b = Builder::default();
    for p in out.split("\n\n") {
        b.paragraph(p);
    }
    Ok(b.finish(Format::Rtf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_survives_and_tables_do_not_leak() {
        let rtf =
            br"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0 Times;}}{\colortbl;\red0\green0\blue0;}
{\*\generator Writer}{\info{\title Hidden}}\pard Caf\'e9 \b bold\b0  text.\par
Unicode \u8364?  and \{braces\}.\par}";
        let d = extract(Path::new("a.rtf"), rtf, &Limits::default()).unwrap();
        assert_eq!(d.text, "Café bold text.\n\nUnicode € and {braces}.");
    }

    #[test]
    fn truncated_rtf_is_named() {
        let e = extract(
            Path::new("t.rtf"),
            br"{\rtf1\ansi {\b unclosed",
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("t.rtf: damaged or truncated: 2 RTF groups are never closed"),
            "{e}"
        );
    }
}
