//! A guarded XML reader for the office formats: DTDs refused (so no entity is ever defined, let
//! alone expanded — billion laughs and external entities cannot happen), nesting depth bounded.

use crate::IngestError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use std::path::Path;

/// What the walker sees: element starts/ends (by local name) and text.
pub(crate) enum Node<'a> {
    Start(&'a str, &'a BytesStart<'a>),
    Empty(&'a str, &'a BytesStart<'a>),
    End(&'a str),
    Text(String),
}

/// Walks `xml`, calling `f` for each node. `what` names the part in errors ("word/document.xml").
pub(crate) fn walk(
    path: &Path,
    what: &str,
    xml: &[u8],
    max_depth: usize,
    mut f: impl FnMut(Node<'_>),
) -> Result<(), IngestError> {
    let (source, _) = crate::text::decode(xml);
    let mut reader = Reader::from_str(&source);
    let mut depth = 0usize;
    let bad = |e: String| IngestError::corrupt(path, format!("{what}: {e}"));
    loop {
        match reader.read_event().map_err(|e| bad(e.to_string()))? {
            Event::DocType(_) => {
                return Err(IngestError::limit(
                    path,
                    format!("{what} contains a DTD; entity definitions are refused"),
                ))
            }
            Event::Start(e) => {
                depth += 1;
                if depth > max_depth {
                    return Err(IngestError::limit(
                        path,
                        format!("{what} nests deeper than {max_depth} levels"),
                    ));
                }
                let name = e.local_name();
                f(Node::Start(name.into_inner(), &e));
            }
            Event::Empty(e) => {
                let name = e.local_name();
                f(Node::Empty(name.into_inner(), &e));
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                let name = e.local_name();
                f(Node::End(name.into_inner()));
            }
            Event::Text(t) => f(Node::Text(t.xml10_content().into_owned())),
            Event::CData(t) => f(Node::Text(t.into_inner().into_owned())),
            Event::GeneralRef(r) => {
                // Without a DTD only the five predefined entities and character references exist.
                let name = r.xml10_content();
                let text = match name.as_ref() {
                    "amp" => "&".to_string(),
                    "lt" => "<".to_string(),
                    "gt" => ">".to_string(),
                    "quot" => "\"".to_string(),
                    "apos" => "'".to_string(),
                    other => match r.resolve_char_ref().map_err(|e| bad(e.to_string()))? {
                        Some(c) => c.to_string(),
                        None => return Err(bad(format!("undefined entity &{other};"))),
                    },
                };
                f(Node::Text(text));
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

/// The value of attribute `name` (by local name) of `e`.
pub(crate) fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().into_inner() == name)
        .and_then(|a| {
            a.normalized_value(XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}
