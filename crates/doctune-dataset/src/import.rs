//! Instruction data in the formats people already have, read from JSONL, JSON (an array of
//! objects) or CSV/TSV (a header row), with the format detected per file:
//!
//! | format | fields | becomes |
//! |---|---|---|
//! | `alpaca` | `instruction`, optional `input`, `output` (optional `system`) | user: instruction (+ blank line + input), assistant: output |
//! | `promptCompletion` | `prompt`, `completion` or `response` | user: prompt, assistant: completion |
//! | `sharegpt` | `conversations: [{from, value}]` (`human`/`user`, `gpt`/`assistant`, `system`) | the conversation |
//! | `openai` | `messages: [{role, content}]` (`system`, `user`, `assistant`; content a string or text parts) | the conversation |
//! | `text` | `text` | plain text, trained on every token |
//!
//! Each row that does not fit — malformed JSON, a missing field, an unknown role, an empty
//! conversation — is a [`BadRow`] with its line number; nothing is dropped silently.

use crate::DatasetError;
use doctune_tokenizer::Message;
use serde::Serialize;
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Largest instruction file read.
pub const MAX_FILE_BYTES: u64 = 2 << 30;
/// Most rows read from one file.
pub const MAX_ROWS: usize = 5_000_000;
/// Most messages in one conversation.
pub const MAX_MESSAGES: usize = 1_000;
/// Longest line of a JSON Lines file; a longer one is a bad row, skipped without being held.
pub const MAX_LINE_BYTES: usize = 64 << 20;
/// Largest text of one message (or of one `text` row).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// A detected row format.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum RowFormat {
    Alpaca,
    PromptCompletion,
    Sharegpt,
    Openai,
    Text,
}

impl RowFormat {
    pub fn describe(self) -> &'static str {
        match self {
            RowFormat::Alpaca => "alpaca (instruction, input, output)",
            RowFormat::PromptCompletion => "prompt/completion",
            RowFormat::Sharegpt => "sharegpt (conversations: from, value)",
            RowFormat::Openai => "OpenAI chat (messages: role, content)",
            RowFormat::Text => "plain text (text)",
        }
    }
}

/// One training example before rendering.
#[derive(Debug, Clone, PartialEq)]
pub enum Example {
    Chat(Vec<Message>),
    Text(String),
}

/// A row that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BadRow {
    pub file: String,
    /// 1-based line (JSONL, CSV) or array element (JSON) number.
    pub line: usize,
    pub reason: String,
}

/// What was read from one file.
#[derive(Debug, Clone)]
pub struct Imported {
    pub file: String,
    pub format: Option<RowFormat>,
    /// (line, example)
    pub examples: Vec<(usize, Example)>,
    pub bad: Vec<BadRow>,
    pub rows: usize,
}

/// A row as read: a JSON object, or why it is not one.
type RawRow = Result<Map<String, Value>, String>;

fn detect(row: &Map<String, Value>) -> Option<RowFormat> {
    if row.contains_key("conversations") {
        Some(RowFormat::Sharegpt)
    } else if row.contains_key("messages") {
        Some(RowFormat::Openai)
    } else if row.contains_key("instruction") {
        Some(RowFormat::Alpaca)
    } else if row.contains_key("prompt") {
        Some(RowFormat::PromptCompletion)
    } else if row.contains_key("text") {
        Some(RowFormat::Text)
    } else {
        None
    }
}

fn string_field(row: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match row.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(format!("field `{key}` is not text")),
    }
}

fn required(row: &Map<String, Value>, key: &str) -> Result<String, String> {
    string_field(row, key)?.ok_or_else(|| format!("missing field `{key}`"))
}

/// Message content: a string, or OpenAI's list of parts (`[{type: "text", text}]`).
fn content_of(v: Option<&Value>) -> Result<String, String> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for p in parts {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text") | None, Some(t)) => out.push_str(t),
                    (Some(other), _) => {
                        return Err(format!("content part of type `{other}` is not text"))
                    }
                    _ => return Err("a content part has no `text`".into()),
                }
            }
            Ok(out)
        }
        Some(Value::Null) | None => Err("a message has no `content`".into()),
        Some(_) => Err("a message's `content` is not text".into()),
    }
}

fn role_of(raw: &str) -> Result<&'static str, String> {
    Ok(match raw {
        "system" => "system",
        "user" | "human" => "user",
        "assistant" | "gpt" | "model" | "bot" => "assistant",
        other => {
            return Err(format!(
                "unknown role `{other}` (system, user/human, assistant/gpt)"
            ))
        }
    })
}

fn conversation(
    row: &Map<String, Value>,
    key: &str,
    role_key: &str,
    content_key: &str,
) -> Result<Example, String> {
    let list = row
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("`{key}` is not a list"))?;
    if list.is_empty() {
        return Err(format!("`{key}` is empty"));
    }
    if list.len() > MAX_MESSAGES {
        return Err(format!("more than {MAX_MESSAGES} messages"));
    }
    let mut messages = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = m
            .get(role_key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("message {} has no `{role_key}`", i + 1))?;
        let role = role_of(role).map_err(|e| format!("message {}: {e}", i + 1))?;
        let content =
            content_of(m.get(content_key)).map_err(|e| format!("message {}: {e}", i + 1))?;
        messages.push(Message::new(role, &content));
    }
    if !messages.iter().any(|m| m.role == "assistant") {
        return Err("no assistant message: nothing to learn".into());
    }
    Ok(Example::Chat(messages))
}

/// Converts one row of a known format; no message may be longer than [`MAX_MESSAGE_BYTES`].
pub fn convert(row: &Map<String, Value>, format: RowFormat) -> Result<Example, String> {
    let example = convert_unchecked(row, format)?;
    let too_long = |len: usize| {
        Err(format!(
            "a message of {len} bytes; the limit is {MAX_MESSAGE_BYTES}"
        ))
    };
    match &example {
        Example::Chat(msgs) => {
            if let Some(m) = msgs.iter().find(|m| m.content.len() > MAX_MESSAGE_BYTES) {
                return too_long(m.content.len());
            }
        }
        Example::Text(t) if t.len() > MAX_MESSAGE_BYTES => return too_long(t.len()),
        Example::Text(_) => {}
    }
    Ok(example)
}

fn convert_unchecked(row: &Map<String, Value>, format: RowFormat) -> Result<Example, String> {
    match format {
        RowFormat::Alpaca => {
            let instruction = required(row, "instruction")?;
            let output = required(row, "output")?;
            let input = string_field(row, "input")?.filter(|s| !s.trim().is_empty());
            let user = match input {
                Some(i) => format!("{instruction}\n\n{i}"),
                None => instruction,
            };
            let mut msgs = Vec::new();
            if let Some(s) = string_field(row, "system")?.filter(|s| !s.trim().is_empty()) {
                msgs.push(Message::new("system", &s));
            }
            msgs.push(Message::new("user", &user));
            msgs.push(Message::new("assistant", &output));
            Ok(Example::Chat(msgs))
        }
        RowFormat::PromptCompletion => {
            let prompt = required(row, "prompt")?;
            let completion = match string_field(row, "completion")? {
                Some(c) => c,
                None => required(row, "response")
                    .map_err(|_| "missing field `completion` (or `response`)".to_string())?,
            };
            Ok(Example::Chat(vec![
                Message::new("user", &prompt),
                Message::new("assistant", &completion),
            ]))
        }
        RowFormat::Sharegpt => conversation(row, "conversations", "from", "value"),
        RowFormat::Openai => conversation(row, "messages", "role", "content"),
        RowFormat::Text => {
            let t = required(row, "text")?;
            if t.trim().is_empty() {
                return Err("`text` is empty".into());
            }
            Ok(Example::Text(t))
        }
    }
}

/// Reads and drops the rest of a line (up to and including its newline), a chunk at a time.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = chunk.len();
                reader.consume(n);
            }
        }
    }
}

/// Reads an instruction file: rows in order with their line numbers, the detected format, and
/// the rows that could not be used. With `stop_on_bad`, the first bad row is an error.
pub fn read_file(path: &Path, stop_on_bad: bool) -> Result<Imported, DatasetError> {
    let name = path.display().to_string();
    let file_err = |message: String| DatasetError::Input {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| file_err(e.to_string()))?;
    if !meta.is_file() {
        return Err(file_err("is not a regular file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(file_err(format!(
            "is {} bytes; the limit is {MAX_FILE_BYTES}",
            meta.len()
        )));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let file = std::fs::File::open(path).map_err(|e| file_err(e.to_string()))?;
    let mut rows = Rows::new(name.clone(), stop_on_bad);
    match ext.as_str() {
        "csv" | "tsv" => {
            let mut rdr = csv::ReaderBuilder::new()
                .delimiter(if ext == "tsv" { b'\t' } else { b',' })
                .flexible(false)
                .from_reader(file);
            let headers = rdr
                .headers()
                .map_err(|e| file_err(format!("no header row: {e}")))?
                .clone();
            for rec in rdr.records() {
                if rows.count >= MAX_ROWS {
                    return Err(file_err(format!("has more than {MAX_ROWS} rows")));
                }
                match rec {
                    Ok(r) => {
                        let line = r.position().map_or(0, |p| p.line() as usize);
                        let map = headers
                            .iter()
                            .zip(r.iter())
                            .map(|(h, v)| (h.trim().to_string(), Value::String(v.to_string())))
                            .collect();
                        rows.push(line, Ok(map))?;
                    }
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line() as usize);
                        rows.push(line, Err(format!("malformed CSV: {e}")))?;
                    }
                }
            }
        }
        "json" => {
            // Streamed: each element becomes a row as it is read, never the whole array at once.
            use serde::de::Deserializer as _;
            let mut de = serde_json::Deserializer::from_reader(BufReader::new(file));
            let read = de.deserialize_any(ArrayOfRows(&mut rows));
            if let Some(stop) = rows.stopped.take() {
                return Err(stop);
            }
            match read {
                Ok(true) => {}
                Ok(false) => {
                    return Err(file_err(
                        "is JSON but not an array of rows (use JSON Lines for one row per line)"
                            .into(),
                    ))
                }
                Err(e) if e.to_string().starts_with(TOO_MANY_ROWS) => {
                    return Err(file_err(format!("has more than {MAX_ROWS} rows")))
                }
                Err(e) => return Err(file_err(format!("is not valid JSON: {e}"))),
            }
            de.end()
                .map_err(|e| file_err(format!("is not valid JSON: {e}")))?;
        }
        _ => {
            // JSON Lines (also the default for .txt-less unknown extensions).
            let mut reader = BufReader::new(file);
            let mut buf = Vec::new();
            let mut line_no = 0;
            loop {
                line_no += 1;
                buf.clear();
                let n = (&mut reader)
                    .take(MAX_LINE_BYTES as u64 + 1)
                    .read_until(b'\n', &mut buf)
                    .map_err(|e| file_err(format!("line {line_no}: {e}")))?;
                if n == 0 {
                    break;
                }
                if rows.count >= MAX_ROWS {
                    return Err(file_err(format!("has more than {MAX_ROWS} rows")));
                }
                if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
                    // Skip the rest of the line without holding it.
                    skip_line(&mut reader).map_err(|e| file_err(format!("line {line_no}: {e}")))?;
                    rows.push(
                        line_no,
                        Err(format!("longer than {MAX_LINE_BYTES} bytes; skipped")),
                    )?;
                    continue;
                }
                let Ok(line) = std::str::from_utf8(&buf) else {
                    rows.push(line_no, Err("not UTF-8 text".into()))?;
                    continue;
                };
                if line.trim().is_empty() {
                    continue;
                }
                rows.push(
                    line_no,
                    match serde_json::from_str::<Value>(line) {
                        Ok(Value::Object(m)) => Ok(m),
                        Ok(_) => Err("row is not a JSON object".into()),
                        Err(e) => Err(format!("malformed JSON: {e}")),
                    },
                )?;
            }
        }
    }

    rows.finish(&file_err)
}

/// How many well-formed rows decide a file's format.
const FORMAT_VOTES: usize = 100;

/// Rows as they are read: the first ones are held until [`FORMAT_VOTES`] well-formed rows (or
/// the end) decide the file's format — the most common among them — and from then on each row
/// is converted as it arrives, so a file is never held as parsed JSON.
struct Rows {
    out: Imported,
    stop_on_bad: bool,
    /// Rows read so far, good and bad.
    count: usize,
    pending: Vec<(usize, RawRow)>,
    well_formed: usize,
    /// The bad row that stopped a `stop_on_bad` read inside the JSON reader.
    stopped: Option<DatasetError>,
}

impl Rows {
    fn new(file: String, stop_on_bad: bool) -> Self {
        Rows {
            out: Imported {
                file,
                format: None,
                examples: Vec::new(),
                bad: Vec::new(),
                rows: 0,
            },
            stop_on_bad,
            count: 0,
            pending: Vec::new(),
            well_formed: 0,
            stopped: None,
        }
    }

    fn push(&mut self, line: usize, row: RawRow) -> Result<(), DatasetError> {
        self.count += 1;
        if let Some(format) = self.out.format {
            return self.convert(line, row, format);
        }
        self.well_formed += usize::from(row.as_ref().is_ok_and(|r| detect(r).is_some()));
        self.pending.push((line, row));
        if self.well_formed >= FORMAT_VOTES {
            self.decide();
            self.drain()?;
        }
        Ok(())
    }

    /// The format: the most common among the well-formed rows held (ties to the first listed).
    fn decide(&mut self) {
        let mut votes: std::collections::BTreeMap<RowFormat, usize> = Default::default();
        for (_, r) in &self.pending {
            if let Some(f) = r.as_ref().ok().and_then(detect) {
                *votes.entry(f).or_default() += 1;
            }
        }
        self.out.format = votes
            .into_iter()
            .max_by_key(|(f, n)| (*n, std::cmp::Reverse(*f)))
            .map(|(f, _)| f);
    }

    fn drain(&mut self) -> Result<(), DatasetError> {
        let Some(format) = self.out.format else {
            return Ok(());
        };
        for (line, row) in std::mem::take(&mut self.pending) {
            self.convert(line, row, format)?;
        }
        Ok(())
    }

    fn convert(&mut self, line: usize, row: RawRow, format: RowFormat) -> Result<(), DatasetError> {
        match row.and_then(|r| convert(&r, format)) {
            Ok(ex) => self.out.examples.push((line, ex)),
            Err(reason) => {
                let bad = BadRow {
                    file: self.out.file.clone(),
                    line,
                    reason,
                };
                if self.stop_on_bad {
                    return Err(DatasetError::BadRow(bad));
                }
                self.out.bad.push(bad);
            }
        }
        Ok(())
    }

    fn finish(
        mut self,
        file_err: &dyn Fn(String) -> DatasetError,
    ) -> Result<Imported, DatasetError> {
        if self.out.format.is_none() {
            self.decide();
        }
        if self.out.format.is_none() {
            if self.count == 0 {
                return Err(file_err("has no rows".into()));
            }
            return Err(file_err(
                "has no row in a known format (alpaca, prompt/completion, sharegpt, OpenAI messages, text)".into(),
            ));
        }
        self.drain()?;
        self.out.rows = self.count;
        Ok(self.out)
    }
}

/// The error text that ends a JSON array read past [`MAX_ROWS`].
const TOO_MANY_ROWS: &str = "doctune: too many rows";

/// A JSON file's top level: an array whose elements go to [`Rows`] one by one (`true`), or
/// anything else (`false`, read past).
struct ArrayOfRows<'a>(&'a mut Rows);

impl<'de> serde::de::Visitor<'de> for ArrayOfRows<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of rows")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        use serde::de::Error;
        let mut i = 0;
        while let Some(v) = seq.next_element::<Value>()? {
            i += 1;
            if self.0.count >= MAX_ROWS {
                return Err(A::Error::custom(TOO_MANY_ROWS));
            }
            let row = match v {
                Value::Object(m) => Ok(m),
                _ => Err("row is not a JSON object".into()),
            };
            if let Err(stop) = self.0.push(i, row) {
                self.0.stopped = Some(stop);
                return Err(A::Error::custom("stopped at a bad row"));
            }
        }
        Ok(true)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(false)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn overlong_lines_and_messages_are_bad_rows_not_memory() {
        let d = tempfile::tempdir().unwrap();
        let good = "{\"prompt\":\"Hi\",\"completion\":\"Yo\"}\n";
        let mut text = String::from(good);
        // Line 2: one line past the limit, with no newline for a long while.
        text.push_str("{\"prompt\":\"");
        text.push_str(&"x".repeat(MAX_LINE_BYTES + 10));
        text.push_str("\",\"completion\":\"Yo\"}\n");
        // Line 3: a message past its limit inside a line that fits.
        text.push_str("{\"prompt\":\"");
        text.push_str(&"y".repeat(MAX_MESSAGE_BYTES + 1));
        text.push_str("\",\"completion\":\"Yo\"}\n");
        text.push_str(good);
        let got = read_file(&write(d.path(), "big.jsonl", &text), false).unwrap();
        assert_eq!(got.examples.len(), 2, "{:?}", got.bad);
        assert_eq!(got.bad.len(), 2);
        assert_eq!(got.bad[0].line, 2);
        assert!(
            got.bad[0].reason.contains("longer than"),
            "{:?}",
            got.bad[0]
        );
        assert_eq!(got.bad[1].line, 3);
        assert!(
            got.bad[1].reason.contains("a message of"),
            "{:?}",
            got.bad[1]
        );
    }

    #[test]
    fn json_arrays_are_read_row_by_row() {
        let d = tempfile::tempdir().unwrap();
        let rows = r#"[{"prompt":"Hi","completion":"Yo"}, 7, {"prompt":"Ho","completion":"Ya"}]"#;
        let got = read_file(&write(d.path(), "a.json", rows), false).unwrap();
        assert_eq!((got.examples.len(), got.rows), (2, 3));
        assert_eq!(
            (got.bad[0].line, got.bad[0].reason.as_str()),
            (2, "row is not a JSON object")
        );
        let e = read_file(&write(d.path(), "b.json", rows), true).unwrap_err();
        assert!(
            matches!(e, DatasetError::BadRow(ref b) if b.line == 2),
            "{e}"
        );
        let e = read_file(&write(d.path(), "c.json", r#"{"prompt":"Hi"}"#), false).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "is JSON but not an array of rows (use JSON Lines for one row per line)"
            ),
            "{e}"
        );
        let e = read_file(
            &write(d.path(), "d.json", r#"[{"prompt":"Hi","completion":"Yo"}"#),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("is not valid JSON"), "{e}");
        let e = read_file(&write(d.path(), "e.json", "[] []"), false).unwrap_err();
        assert!(
            e.to_string()
                .contains("is not valid JSON: trailing characters"),
            "{e}"
        );
    }

    #[test]
    fn detects_each_format_and_converts() {
        let d = tempfile::tempdir().unwrap();
        let cases = [
            ("a.jsonl", "{\"instruction\":\"Sum\",\"input\":\"1 2\",\"output\":\"3\"}\n", RowFormat::Alpaca),
            ("b.jsonl", "{\"conversations\":[{\"from\":\"human\",\"value\":\"Hi\"},{\"from\":\"gpt\",\"value\":\"Yo\"}]}\n", RowFormat::Sharegpt),
            ("c.jsonl", "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"}]},{\"role\":\"assistant\",\"content\":\"Yo\"}]}\n", RowFormat::Openai),
            ("d.json", "[{\"text\":\"plain\"}]", RowFormat::Text),
            ("e.csv", "prompt,completion\n\"Hi, you\",Yo\n", RowFormat::PromptCompletion),
        ];
        for (name, text, want) in cases {
            let got = read_file(&write(d.path(), name, text), false).unwrap();
            assert_eq!(got.format, Some(want), "{name}");
            assert_eq!(got.examples.len(), 1, "{name}: {:?}", got.bad);
        }
        let a = read_file(&d.path().join("a.jsonl"), false).unwrap();
        assert_eq!(
            a.examples[0].1,
            Example::Chat(vec![
                Message::new("user", "Sum\n\n1 2"),
                Message::new("assistant", "3")
            ])
        );
        let e = read_file(&d.path().join("e.csv"), false).unwrap();
        assert_eq!(
            e.examples[0].1,
            Example::Chat(vec![
                Message::new("user", "Hi, you"),
                Message::new("assistant", "Yo")
            ])
        );
    }

    #[test]
    fn bad_rows_have_line_numbers() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "x.jsonl",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":\"Yo\"}]}\n\
             {not json\n\
             \n\
             {\"messages\":[{\"role\":\"wizard\",\"content\":\"Hi\"}]}\n\
             {\"messages\":[{\"role\":\"user\",\"content\":\"only a question\"}]}\n\
             [1,2]\n",
        );
        let got = read_file(&p, false).unwrap();
        assert_eq!(got.examples.len(), 1);
        let lines: Vec<(usize, &str)> = got
            .bad
            .iter()
            .map(|b| (b.line, b.reason.as_str()))
            .collect();
        assert_eq!(lines[0].0, 2);
        assert!(lines[0].1.starts_with("malformed JSON"));
        assert_eq!(
            lines[1],
            (
                4,
                "message 1: unknown role `wizard` (system, user/human, assistant/gpt)"
            )
        );
        assert_eq!(lines[2], (5, "no assistant message: nothing to learn"));
        assert_eq!(lines[3], (6, "row is not a JSON object"));
        let err = read_file(&p, true).unwrap_err().to_string();
        assert!(err.contains("x.jsonl") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn unknown_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "y.jsonl", "{\"foo\": 1}\n");
        let err = read_file(&p, false).unwrap_err().to_string();
        assert!(
            err.contains("y.jsonl") && err.contains("no row in a known format"),
            "{err}"
        );
        let p = write(d.path(), "z.json", "{\"foo\": 1}");
        assert!(read_file(&p, false)
            .unwrap_err()
            .to_string()
            .contains("not an array"));
    }
}
