//! Chat templates: a model's Jinja template rendered with minijinja, configured the way
//! transformers' `apply_chat_template` configures Jinja2 (`trim_blocks`, `lstrip_blocks`, loop
//! controls, `raise_exception`, `strftime_now`, a `tojson` that prints as `json.dumps` does, and
//! Python's string/dict methods through minijinja-contrib's pycompat).
//!
//! A template comes from a model's files, so it is bounded like any other input: each render has
//! [`TEMPLATE_FUEL`] instructions (nested loops that never end stop there) and may write at most
//! [`MAX_RENDERED_EXTRA_BYTES`] plus [`RENDERED_BYTES_PER_INPUT_BYTE`] × the conversation's
//! bytes (a template that writes far more than its input stops there), each with an error that
//! says so.
//!
//! What fuel cannot see is memory a template builds without writing it — a string doubled in a
//! loop or by a macro, thirty steps to a gigabyte. So in a binary that serves [`RENDER_JOB`]
//! (the CLI and the app), every render runs in a `doctune_core::worker` child process kept for
//! the template's lifetime, capped at [`RENDER_MEMORY_BYTES`] and [`RENDER_SECS`] per render;
//! past either the child is killed, the render fails with "did not finish within its budget",
//! and the next render starts a fresh child. Elsewhere (library users, other crates' tests) it
//! renders in process.

use crate::{Result, TokenizerError};
use doctune_core::worker::{Caps, Death, Ended, Worker};
use doctune_core::CancelToken;
use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The special tokens a template may use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Specials {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    specials: Specials,
    /// The render worker, started at the first render (only in a binary that serves workers).
    worker: std::sync::Mutex<Option<Worker>>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bytes", &self.source.len())
            .finish()
    }
}

const NAME: &str = "chat";

/// minijinja instructions one render may run: real templates need a few hundred per message.
pub const TEMPLATE_FUEL: u64 = 20_000_000;
/// Rendered bytes a template may add to any conversation (system prompts, tool schemas, dates).
pub const MAX_RENDERED_EXTRA_BYTES: usize = 1 << 20;
/// Rendered bytes a template may write per byte of the conversation's messages.
pub const RENDERED_BYTES_PER_INPUT_BYTE: usize = 8;

/// The job's name on the worker's command line.
pub const RENDER_JOB: &str = "render";
/// Address space of the render worker (Linux `RLIMIT_AS`).
pub const RENDER_MEMORY_BYTES: u64 = 1 << 30;
/// Wall time one render may take in the worker; fuel stops a loop well before.
pub const RENDER_SECS: u64 = 30;
/// The largest render request a worker reads (a conversation of a long document row).
const MAX_REQUEST_BYTES: u64 = 256 << 20;

/// One render, as the parent sends it to the worker.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RenderRequest<'a> {
    #[serde(borrow)]
    source: std::borrow::Cow<'a, str>,
    specials: Specials,
    messages: std::borrow::Cow<'a, [Message]>,
    add_generation_prompt: bool,
}

/// The worker's side: answers render requests, one JSON line each (`{"Ok": text}` or
/// `{"Err": message}`), until its input ends. The last template compiled is kept.
pub fn serve_render(
    input: &mut dyn std::io::BufRead,
    output: &mut (dyn std::io::Write + Send),
) -> i32 {
    use std::io::{BufRead, Read};
    let mut current: Option<ChatTemplate> = None;
    loop {
        let mut line = Vec::new();
        match (&mut *input)
            .take(MAX_REQUEST_BYTES)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return 0,
            Ok(_) => {}
            Err(_) => return 2,
        }
        let Ok(req) = serde_json::from_slice::<RenderRequest<'_>>(&line) else {
            return 2;
        };
        let mut answer = || -> Result<String> {
            let same = current
                .as_ref()
                .is_some_and(|t| t.source == req.source && t.specials == req.specials);
            if !same {
                current = None;
                current = Some(ChatTemplate::new(&req.source, req.specials.clone())?);
            }
            let t = current.as_ref().expect("compiled above");
            t.render_here(&req.messages, req.add_generation_prompt)
        };
        let answer = answer().map_err(|e| match e {
            TokenizerError::Template(m) => m,
            other => other.to_string(),
        });
        let ok = serde_json::to_writer(&mut *output, &answer).is_ok()
            && output.write_all(b"\n").is_ok()
            && output.flush().is_ok();
        if !ok {
            return 2;
        }
    }
}

/// A writer that refuses to grow past its cap.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.cap {
            self.overflowed = true;
            return Err(std::io::Error::other("the rendered size cap"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ChatTemplate {
    pub(crate) fn new(source: &str, specials: Specials) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| TokenizerError::Template(e.to_string()))?;
        Ok(Self {
            env,
            source: source.to_owned(),
            specials,
            worker: std::sync::Mutex::new(None),
        })
    }

    /// Compiles a template given as text (for tests and for templates the user supplies).
    pub fn from_source(
        source: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<Self> {
        Self::new(
            source,
            Specials {
                bos_token: bos_token.map(str::to_owned),
                eos_token: eos_token.map(str::to_owned),
                ..Specials::default()
            },
        )
    }

    /// The template's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` as `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=…)` does — in the render worker where this binary serves one.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        if doctune_core::worker::enabled() {
            self.render_in_worker(messages, add_generation_prompt)
        } else {
            self.render_here(messages, add_generation_prompt)
        }
    }

    fn render_in_worker(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let budget = |why: String| {
            TokenizerError::Template(format!(
                "this model's chat template did not finish within its budget: {why}"
            ))
        };
        let mut slot = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let caps = Caps {
                timeout: std::time::Duration::from_secs(RENDER_SECS),
                // The worker lives as long as the template; each render has its deadline.
                cpu_time: std::time::Duration::from_secs(24 * 3600),
                max_memory_bytes: RENDER_MEMORY_BYTES,
            };
            let w = Worker::start(RENDER_JOB, &caps).map_err(|e| {
                TokenizerError::Template(format!("cannot start the template worker: {e}"))
            })?;
            *slot = Some(w);
        }
        let worker = slot.as_mut().expect("started above");
        let mut request = serde_json::to_vec(&RenderRequest {
            source: self.source.as_str().into(),
            specials: self.specials.clone(),
            messages: messages.into(),
            add_generation_prompt,
        })
        .map_err(|e| TokenizerError::Template(e.to_string()))?;
        request.push(b'\n');
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(RENDER_SECS);
        // A worker that died while reading makes send fail; next_line then says why.
        let _ = worker.send(&request);
        let answer = worker.next_line(deadline, &CancelToken::new());
        let ended = match answer {
            Ok(line) => {
                match serde_json::from_slice::<std::result::Result<String, String>>(&line) {
                    Ok(Ok(text)) => return Ok(text),
                    Ok(Err(message)) => return Err(TokenizerError::Template(message)),
                    Err(_) => Ended::Died(worker.died()),
                }
            }
            Err(ended) => ended,
        };
        // The worker is gone (killed or dead); the next render starts another.
        *slot = None;
        Err(match ended {
            Ended::Died(Death::OutOfMemory) => budget(format!(
                "it needed more than {} MiB of memory",
                RENDER_MEMORY_BYTES >> 20
            )),
            Ended::Deadline | Ended::Cancelled => {
                budget(format!("it ran longer than {RENDER_SECS} s"))
            }
            Ended::Died(Death::CpuTime) => budget("it used its CPU time".into()),
            Ended::Died(death) => {
                TokenizerError::Template(format!("the template worker failed ({death:?})"))
            }
        })
    }

    /// Renders in this process (fuel and the output cap still apply).
    fn render_here(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| TokenizerError::Template(e.to_string()))?;
        let s = &self.specials;
        let input: usize = messages
            .iter()
            .map(|m| m.content.len() + m.role.len())
            .sum();
        let mut out = Capped {
            buf: Vec::new(),
            cap: MAX_RENDERED_EXTRA_BYTES
                .saturating_add(input.saturating_mul(RENDERED_BYTES_PER_INPUT_BYTE)),
            overflowed: false,
        };
        let rendered = tmpl.render_captured_to(
            minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => s.bos_token.clone().unwrap_or_default(),
                eos_token => s.eos_token.clone().unwrap_or_default(),
                pad_token => s.pad_token.clone().unwrap_or_default(),
                unk_token => s.unk_token.clone().unwrap_or_default(),
            },
            &mut out,
        );
        if out.overflowed {
            return Err(TokenizerError::Template(format!(
                "this model's chat template did not finish within its budget: it wrote more than {} bytes for a conversation of {input}",
                out.cap
            )));
        }
        match rendered {
            Ok(_) => String::from_utf8(out.buf)
                .map_err(|e| TokenizerError::Template(format!("rendered text is not UTF-8: {e}"))),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(TokenizerError::Template(format!(
                "this model's chat template did not finish within its budget of {TEMPLATE_FUEL} steps; it may loop without end"
            ))),
            Err(e) => {
                let mut msg = e.to_string();
                if let Some(detail) = e.detail() {
                    if !msg.contains(detail) {
                        msg = format!("{msg}: {detail}");
                    }
                }
                Err(TokenizerError::Template(msg))
            }
        }
    }

    /// The marker the template closes an assistant turn with (`<|eot_id|>`, `<|im_end|>`,
    /// `<end_of_turn>`, `</s>`, …): the first word after the reply when a user/assistant
    /// exchange is rendered. `None` if the template adds nothing after a reply.
    pub fn end_of_turn(&self) -> Option<String> {
        const REPLY: &str = "DOCTUNEREPLYSENTINEL";
        let text = self
            .render(
                &[
                    Message::new("user", "hello"),
                    Message::new("assistant", REPLY),
                ],
                false,
            )
            .ok()?;
        let tail = &text[text.rfind(REPLY)? + REPLY.len()..];
        tail.split_whitespace()
            .next()
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
    }
}

/// `strftime_now(format)`: the current local date in a Python `strftime` format (templates such
/// as Llama 3.1's put today's date in the system prompt). Supports the directives templates use.
fn strftime_now(format: String) -> Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let now = time::OffsetDateTime::now_local().unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let month = MONTHS[usize::from(u8::from(now.month())) - 1];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out += &format!("{:02}", now.day()),
            Some('m') => out += &format!("{:02}", u8::from(now.month())),
            Some('Y') => out += &now.year().to_string(),
            Some('y') => out += &format!("{:02}", now.year() % 100),
            Some('b') => out += &month[..3],
            Some('B') => out += month,
            Some('H') => out += &format!("{:02}", now.hour()),
            Some('M') => out += &format!("{:02}", now.minute()),
            Some('S') => out += &format!("{:02}", now.second()),
            Some('%') => out.push('%'),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{}",
                        other.unwrap_or(' ')
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// `json.dumps` separators (", " and ": ") without indent.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent)`,
/// not HTML-escaped (minijinja's built-in escapes `<`, `>`, `&` and `'` for HTML).
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut buf = Vec::new();
    let result = match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&pad);
            value.serialize(&mut serde_json::Serializer::with_formatter(&mut buf, fmt))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut buf,
            PythonFormatter,
        )),
    };
    result.map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let text = String::from_utf8(buf)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(Value::from_safe_string(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn templates_that_never_end_or_flood_stop_with_a_clear_error() {
        // Nested loops: 10^15 iterations, writing nothing.
        let spin = "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}{% endfor %}{% endfor %}{% endfor %}";
        let t = ChatTemplate::from_source(spin, None, None).unwrap();
        let started = std::time::Instant::now();
        let e = t.render(&[Message::new("user", "Hi")], true).unwrap_err();
        assert!(
            e.to_string().contains("did not finish within its budget"),
            "{e}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        // A flood: far more output than the conversation could need.
        let flood = "{% for a in range(100000) %}{% for b in range(1000) %}0123456789{% endfor %}{% endfor %}";
        let t = ChatTemplate::from_source(flood, None, None).unwrap();
        let e = t.render(&[Message::new("user", "Hi")], true).unwrap_err();
        assert!(e.to_string().contains("wrote more than"), "{e}");
        // A real conversation of many long messages still renders.
        let t = ChatTemplate::from_source(CHATML, None, None).unwrap();
        let long: Vec<Message> = (0..2000)
            .map(|i| {
                Message::new(
                    if i % 2 == 0 { "user" } else { "assistant" },
                    &"word ".repeat(500),
                )
            })
            .collect();
        assert!(t.render(&long, true).unwrap().len() > 2000 * 2500);
    }

    #[test]
    fn renders_chatml_and_finds_its_end_of_turn() {
        let t = ChatTemplate::from_source(CHATML, None, None).unwrap();
        let text = t.render(&[Message::new("user", "Hi")], true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(t.end_of_turn().as_deref(), Some("<|im_end|>"));
    }

    #[test]
    fn trims_blocks_and_knows_python_methods() {
        // Jinja2 with trim_blocks/lstrip_blocks, as transformers sets it up.
        let src = "{{ bos_token }}{% for m in messages %}\n  {% if m.role == 'user' %}\n[INST] {{ m.content.strip() }} [/INST]\n  {%- else %}\n {{ m['content'] }}{{ eos_token }}\n  {%- endif %}\n{% endfor %}";
        let t = ChatTemplate::from_source(src, Some("<s>"), Some("</s>")).unwrap();
        let text = t
            .render(
                &[
                    Message::new("user", "  Hi  "),
                    Message::new("assistant", "Yo"),
                ],
                false,
            )
            .unwrap();
        assert_eq!(text, "<s>[INST] Hi [/INST] Yo</s>");
        assert_eq!(t.end_of_turn().as_deref(), Some("</s>"));
    }

    #[test]
    fn raise_exception_is_an_error_with_the_message() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation roles must alternate') }}{% endif %}";
        let t = ChatTemplate::from_source(src, None, None).unwrap();
        let err = t.render(&[Message::new("system", "x")], false).unwrap_err();
        assert!(
            err.to_string()
                .contains("Conversation roles must alternate"),
            "{err}"
        );
    }

    #[test]
    fn tojson_prints_like_python() {
        let t = ChatTemplate::from_source(
            "{{ {'a': 1, 'b': [1, 2], 'c': '<é>'} | tojson }}|{{ [1] | tojson(indent=2) }}",
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            t.render(&[], false).unwrap(),
            "{\"a\": 1, \"b\": [1, 2], \"c\": \"<é>\"}|[\n  1\n]"
        );
    }

    #[test]
    fn strftime_now_formats_a_date() {
        let s = strftime_now("%d %b %Y".into()).unwrap();
        assert_eq!(s.len(), 11, "{s}");
        assert!(strftime_now("%Q".into()).is_err());
    }

    #[test]
    fn loop_controls_work() {
        let t = ChatTemplate::from_source(
            "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}",
            None,
            None,
        )
        .unwrap();
        let msgs = [Message::new("user", "a"), Message::new("user", "b")];
        assert_eq!(t.render(&msgs, false).unwrap(), "a");
    }
}
