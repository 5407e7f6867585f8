//! HTML/XHTML to text: the DOM (html5ever, via scraper) walked in order; `script`, `style`, `nav`,
//! `header`, `footer`, `aside`, `form`, `noscript`, `template`, `svg`, `iframe` and anything
//! `hidden` dropped; block elements become paragraphs, `h1`–`h6` headings, `li` items, table rows
//! one paragraph each. The title is `<title>`, else the first heading.
//!
//! Markup nesting is bounded before html5ever sees it ([`check_depth`], `Limits::max_markup_depth`):
//! its tree builder looks through the open elements for every block start tag, so a million
//! unclosed `<div>`s cost it hours (30 s at 100,000 on the machine of docs/performance.md). The
//! tree is then walked with an explicit stack, never recursively.

use crate::document::{Builder, Document};
use crate::{Format, IngestError, Limits};
use scraper::{ElementRef, Html, Node};
use std::path::Path;

/// Parses `source` once its nesting is known to be within the limit.
pub(crate) fn parse(path: &Path, source: &str, limits: &Limits) -> Result<Html, IngestError> {
    if let Some(depth) = check_depth(source, limits.max_markup_depth) {
        return Err(IngestError::limit(
            path,
            format!(
                "markup nests more than {depth} elements deep (the limit is {})",
                limits.max_markup_depth
            ),
        ));
    }
    Ok(Html::parse_document(source))
}

/// Elements that never stay open (void) or that the parser closes by itself when a sibling
/// starts (optional end tags): they do not deepen the tree builder's stack of open elements.
const SHALLOW: [&str; 33] = [
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr", "p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "thead",
    "tbody", "tfoot", "colgroup", "caption", "rt", "rp", "html", "head", "body",
];

/// `Some(depth)` when the elements left open at some point of `source` exceed `max` — counted
/// from start and end tags, ignoring comments, doctypes, the raw text of `script`/`style`/
/// `textarea`/`title`, and the elements of [`SHALLOW`]. An upper bound on how deep html5ever's
/// open-element stack gets, read in one pass without building anything.
pub(crate) fn check_depth(source: &str, max: usize) -> Option<usize> {
    let b = source.as_bytes();
    let (mut i, mut depth) = (0usize, 0usize);
    while let Some(at) = memchr_lt(b, i) {
        i = at + 1;
        if b[i..].starts_with(b"!--") {
            i = find(b, i, b"-->").map_or(b.len(), |e| e + 3);
            continue;
        }
        let closing = b.get(i) == Some(&b'/');
        let start = i + usize::from(closing);
        let end = b[start..]
            .iter()
            .position(|c| !c.is_ascii_alphanumeric())
            .map_or(b.len(), |n| start + n);
        if end == start {
            continue;
        }
        let name = source[start..end].to_ascii_lowercase();
        if SHALLOW.contains(&name.as_str()) {
            continue;
        }
        if closing {
            depth = depth.saturating_sub(1);
            continue;
        }
        if matches!(name.as_str(), "script" | "style" | "textarea" | "title") {
            // Raw text: skip to its end tag.
            let close = format!("</{name}");
            i = find_ascii_ci(b, end, close.as_bytes()).unwrap_or(b.len());
            continue;
        }
        depth += 1;
        if depth > max {
            return Some(depth - 1);
        }
    }
    None
}

fn memchr_lt(b: &[u8], from: usize) -> Option<usize> {
    b.get(from..)?
        .iter()
        .position(|&c| c == b'<')
        .map(|n| from + n)
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|n| from + n)
}

fn find_ascii_ci(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|n| from + n)
}

const SKIP: [&str; 12] = [
    "script", "style", "nav", "header", "footer", "aside", "form", "noscript", "template", "svg",
    "iframe", "head",
];
const BLOCK: [&str; 19] = [
    "p",
    "div",
    "section",
    "article",
    "main",
    "blockquote",
    "pre",
    "li",
    "dd",
    "dt",
    "tr",
    "table",
    "ul",
    "ol",
    "dl",
    "figure",
    "figcaption",
    "address",
    "body",
];

pub(crate) fn extract(path: &Path, source: &str, limits: &Limits) -> Result<Document, IngestError> {
    let html = parse(path, source, limits)?;
    let mut b = Builder::default();
    append(&html, &mut b);
    let title = html
        .select(&scraper::Selector::parse("title").expect("static selector"))
        .next()
        .map(|t| crate::clean::paragraph(&t.text().collect::<String>()))
        .filter(|t| !t.is_empty());
    let mut doc = b.finish(Format::Html);
    if title.is_some() {
        doc.title = title;
    }
    Ok(doc)
}

/// Appends the visible text of `html` to `b` (used for EPUB chapters too).
pub(crate) fn append(html: &Html, b: &mut Builder) {
    let mut current = String::new();
    walk(html.root_element(), b, &mut current);
    b.paragraph(&current);
}

/// What is left to do for the walk: visit a node, or close a cell or a block once its children
/// are done.
enum Step<'a> {
    Visit(ego_tree::NodeRef<'a, Node>),
    EndCell,
    EndBlock,
}

/// Walks `el`'s subtree in document order with an explicit stack, so markup nested millions of
/// levels deep cannot overflow the thread's stack.
fn walk(el: ElementRef<'_>, b: &mut Builder, current: &mut String) {
    let mut stack: Vec<Step<'_>> = el.children().rev().map(Step::Visit).collect();
    while let Some(step) = stack.pop() {
        let child = match step {
            Step::Visit(n) => n,
            Step::EndCell => {
                current.push_str(" \t ");
                continue;
            }
            Step::EndBlock => {
                b.paragraph(&std::mem::take(current));
                continue;
            }
        };
        match child.value() {
            Node::Text(t) => current.push_str(t),
            Node::Element(e) => {
                let name = e.name();
                if SKIP.contains(&name)
                    || e.attr("hidden").is_some()
                    || e.attr("aria-hidden") == Some("true")
                {
                    continue;
                }
                let Some(child_el) = ElementRef::wrap(child) else {
                    continue;
                };
                let heading = name.len() == 2
                    && name.starts_with('h')
                    && matches!(name.as_bytes()[1], b'1'..=b'6');
                if heading {
                    b.paragraph(&std::mem::take(current));
                    b.heading(&child_el.text().collect::<String>());
                    continue;
                }
                if name == "br" {
                    current.push('\n');
                    continue;
                }
                if matches!(name, "td" | "th") {
                    stack.push(Step::EndCell);
                } else if BLOCK.contains(&name) {
                    b.paragraph(&std::mem::take(current));
                    stack.push(Step::EndBlock);
                }
                stack.extend(child.children().rev().map(Step::Visit));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boilerplate_is_dropped_and_structure_kept() {
        let doc = extract(
            Path::new("x.html"),
            r#"<!doctype html><html><head><title>Bees &amp; Honey</title><style>p{}</style></head>
            <body><nav>Home · About</nav><header>Site header</header>
            <article><h1>Harvest</h1><p>Take only <b>capped</b> frames.</p>
            <ul><li>one</li><li>two</li></ul><script>alert(1)</script>
            <table><tr><td>a</td><td>b</td></tr></table><p hidden>secret</p></article>
            <footer>© club</footer></body></html>"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(doc.title.as_deref(), Some("Bees & Honey"));
        assert_eq!(
            doc.text,
            "Harvest\n\nTake only capped frames.\n\none\n\ntwo\n\na b"
        );
        assert_eq!(doc.sections[0].label, "Harvest");
    }

    #[test]
    fn markup_nested_to_the_limit_does_not_overflow_the_stack() {
        let depth = Limits::default().max_markup_depth;
        let mut src = String::from("<html><body>");
        src.push_str(&"<span>".repeat(depth));
        src.push_str("deep");
        src.push_str(&"</span>".repeat(depth));
        src.push_str("<p>after</p></body></html>");
        // On a small stack, as a parser worker thread might have.
        let doc = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || extract(Path::new("deep.html"), &src, &Limits::default()).unwrap())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(doc.text, "deep\n\nafter");
    }

    #[test]
    fn markup_nested_past_the_limit_is_refused_before_parsing() {
        let mut src = String::from("<html><body>");
        src.push_str(&"<div>".repeat(1_000_000));
        let start = std::time::Instant::now();
        let e = extract(Path::new("deep.html"), &src, &Limits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "deep.html: markup nests more than 4096 elements deep (the limit is 4096)"
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn depth_counts_only_elements_that_stay_open() {
        // Unclosed paragraphs, list items, cells and void elements; tags in comments and scripts.
        let mut src = String::from("<!doctype html><html><head><title><div></title>");
        src.push_str("<script>if (a <div) {}</script><!-- <div><div> --></head><body>");
        for _ in 0..10_000 {
            src.push_str("<p>para<br><img src=x><li>item<TD>cell<div>ok</DIV>");
        }
        assert_eq!(check_depth(&src, 3), None);
        assert_eq!(check_depth("<div><span><b><i>x", 3), Some(3));
        assert_eq!(check_depth("<div></div><div></div><div>", 1), None);
    }
}
