//! HTML/XHTML to text: the DOM (html5ever, via scraper) walked in order; `script`, `style`, `nav`,
//! `header`, `footer`, `aside`, `form`, `noscript`, `template`, `svg`, `iframe` and anything
//! `hidden` dropped; block elements become paragraphs, `h1`–`h6` headings, `li` items, table rows
//! one paragraph each. The title is `<title>`, else the first heading.

use crate::document::{Builder, Document};
use crate::{Format, IngestError};
use scraper::{ElementRef, Html, Node};
use std::path::Path;

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

pub(crate) fn extract(_path: &Path, source: &str) -> Result<Document, IngestError> {
    let html = Html::parse_document(source);
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
    fn markup_nested_a_million_levels_deep_does_not_overflow_the_stack() {
        let depth = 1_000_000;
        let mut src = String::from("<html><body>");
        src.push_str(&"<span>".repeat(depth));
        src.push_str("deep");
        src.push_str(&"</span>".repeat(depth));
        src.push_str("<p>after</p></body></html>");
        // On a small stack, as a parser worker thread might have.
        let doc = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || extract(Path::new("deep.html"), &src).unwrap())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(doc.text, "deep\n\nafter");
    }
}
