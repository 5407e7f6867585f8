//! Tiny generated model folders and a loopback server in the Hugging Face Hub's URL layout
//! (listing with hashes, `resolve/` with ranges, whoami). It listens on 127.0.0.1 with an
//! OS-chosen port and stops when dropped.

use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A tiny Llama-style model: `(file name, bytes)` for config, tokenizer files and weights,
/// sharded into `shards` safetensors files (with an index when more than one).
pub fn tiny_llama(shards: usize) -> Vec<(String, Vec<u8>)> {
    let (vocab, hidden, layers) = (32usize, 8usize, 2usize);
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": 16,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "tie_word_embeddings": false,
        "torch_dtype": "float32"
    });
    let mut tensors: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![vocab, hidden])];
    for l in 0..layers {
        for (n, s) in [
            ("self_attn.q_proj.weight", vec![hidden, hidden]),
            ("self_attn.k_proj.weight", vec![hidden / 2, hidden]),
            ("self_attn.v_proj.weight", vec![hidden / 2, hidden]),
            ("self_attn.o_proj.weight", vec![hidden, hidden]),
            ("mlp.gate_proj.weight", vec![16, hidden]),
            ("mlp.up_proj.weight", vec![16, hidden]),
            ("mlp.down_proj.weight", vec![hidden, 16]),
            ("input_layernorm.weight", vec![hidden]),
            ("post_attention_layernorm.weight", vec![hidden]),
        ] {
            tensors.push((format!("model.layers.{l}.{n}"), s));
        }
    }
    tensors.push(("model.norm.weight".into(), vec![hidden]));
    tensors.push(("lm_head.weight".into(), vec![vocab, hidden]));

    let mut out = vec![
        (
            "config.json".to_string(),
            serde_json::to_vec_pretty(&config).unwrap(),
        ),
        (
            "tokenizer.json".to_string(),
            br#"{"version":"1.0","model":{"type":"BPE","vocab":{},"merges":[]}}"#.to_vec(),
        ),
        (
            "tokenizer_config.json".to_string(),
            br#"{"bos_token":"<s>","eos_token":"</s>"}"#.to_vec(),
        ),
        ("README.md".to_string(), b"# tiny\n".to_vec()),
    ];
    let per = tensors.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    for (i, chunk) in tensors.chunks(per).enumerate() {
        let name = if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", i + 1, shards)
        };
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = chunk
            .iter()
            .map(|(n, s)| {
                let count: usize = s.iter().product();
                let bytes: Vec<u8> = (0..count)
                    .flat_map(|k| ((k % 7) as f32 * 0.01).to_le_bytes())
                    .collect();
                (n.clone(), s.clone(), bytes)
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                        .unwrap(),
                )
            })
            .collect();
        out.push((name.clone(), safetensors::serialize(views, None).unwrap()));
        for (n, _) in chunk {
            weight_map.insert(n.clone(), serde_json::Value::String(name.clone()));
        }
    }
    if shards > 1 {
        let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
        out.push((
            "model.safetensors.index.json".into(),
            serde_json::to_vec(&index).unwrap(),
        ));
    }
    out
}

/// A repository with a config but only a pickle for weights.
pub fn pickle_only() -> Vec<(String, Vec<u8>)> {
    let mut files = tiny_llama(1);
    files.retain(|(n, _)| !n.ends_with(".safetensors"));
    files.push(("pytorch_model.bin".into(), b"\x80\x02".to_vec()));
    files
}

pub fn write_folder(dir: &std::path::Path, files: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (n, b) in files {
        std::fs::write(dir.join(n), b).unwrap();
    }
}

/// One repository the server serves.
#[derive(Debug, Clone, Default)]
pub struct FakeRepo {
    pub files: Vec<(String, Vec<u8>)>,
    /// A bearer token the repository demands (a gated model).
    pub token: Option<String>,
    /// Files served with different bytes than the listing's hash (a corrupted shard).
    pub corrupt: HashSet<String>,
    /// While set: serving this file breaks off the connection at this byte offset.
    pub drop_at: Option<(String, usize)>,
    /// A hostile server: what it lies about.
    pub hostile: Option<Hostile>,
}

/// The lies of a hostile or spoofed Hub, each aimed at a file name in the client's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hostile {
    /// The listing's `sha` (the commit) is this (`../../x`, an absolute path, …).
    ListingSha(String),
    /// Every file's `X-Repo-Commit` header is this.
    CommitHeader(String),
    /// Every file's `ETag` (and `X-Linked-Etag`) is this.
    Etag(String),
    /// Each file's body is this many bytes longer than its listing says.
    LongBody(usize),
    /// Every file answer redirects here (absolute URL).
    RedirectTo(String),
}

#[derive(Default)]
struct State {
    repos: HashMap<String, FakeRepo>,
    /// "METHOD path range" of every request, for assertions.
    log: Vec<String>,
    tokens: HashSet<String>,
}

pub struct FakeHub {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    port: u16,
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn is_lfs(name: &str) -> bool {
    name.ends_with(".safetensors") || name.ends_with(".bin")
}

fn git_oid(bytes: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex::encode(h.finalize())
}

impl FakeHub {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (state.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s3 = s2.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = handle(conn, &s3);
                });
            }
        });
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            state,
            stop,
            handle: Some(handle),
            port,
        }
    }

    pub fn add_repo(&self, id: &str, repo: FakeRepo) {
        let mut s = self.state.lock().unwrap();
        if let Some(t) = &repo.token {
            s.tokens.insert(t.clone());
        }
        s.repos.insert(id.to_string(), repo);
    }

    /// A plain repository of these files.
    pub fn add_files(&self, id: &str, files: Vec<(String, Vec<u8>)>) {
        self.add_repo(
            id,
            FakeRepo {
                files,
                ..Default::default()
            },
        );
    }

    pub fn set_drop(&self, id: &str, drop_at: Option<(String, usize)>) {
        self.state
            .lock()
            .unwrap()
            .repos
            .get_mut(id)
            .unwrap()
            .drop_at = drop_at;
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

impl std::fmt::Debug for FakeHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHub")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

fn handle(mut conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut discard = Vec::new();
    if let Some(len) = headers
        .get("content-length")
        .and_then(|l| l.parse::<u64>().ok())
    {
        reader.take(len).read_to_end(&mut discard)?;
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    let bearer = headers
        .get("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_string);
    let range = headers.get("range").cloned();
    let mut s = state.lock().unwrap();
    s.log.push(format!(
        "{method} {path} {}",
        range.clone().unwrap_or_default()
    ));

    if path == "/api/whoami-v2" {
        return match bearer {
            Some(t) if s.tokens.contains(&t) => {
                drop(s);
                respond(
                    &mut conn,
                    "200 OK",
                    &[("content-type", "application/json".into())],
                    br#"{"name":"tester","type":"user"}"#,
                )
            }
            _ => {
                drop(s);
                respond(
                    &mut conn,
                    "401 Unauthorized",
                    &[],
                    br#"{"error":"Invalid credentials"}"#,
                )
            }
        };
    }

    // /api/models/{owner}/{name}/revision/{rev}  or  /{owner}/{name}/resolve/{rev}/{file}
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (repo_id, kind, file) =
        if segs.len() >= 6 && segs[0] == "api" && segs[1] == "models" && segs[4] == "revision" {
            (format!("{}/{}", segs[2], segs[3]), "list", String::new())
        } else if segs.len() >= 5 && segs[2] == "resolve" {
            (
                format!("{}/{}", segs[0], segs[1]),
                "file",
                segs[4..].join("/"),
            )
        } else {
            drop(s);
            return respond(&mut conn, "404 Not Found", &[], b"{}");
        };
    let Some(repo) = s.repos.get(&repo_id).cloned() else {
        drop(s);
        return respond(
            &mut conn,
            "404 Not Found",
            &[],
            br#"{"error":"Repository not found"}"#,
        );
    };
    drop(s);
    if let Some(t) = &repo.token {
        if bearer.as_deref() != Some(t.as_str()) {
            return respond(
                &mut conn,
                "401 Unauthorized",
                &[],
                br#"{"error":"Access to this model is restricted."}"#,
            );
        }
    }
    if kind == "list" {
        let siblings: Vec<serde_json::Value> = repo
            .files
            .iter()
            .map(|(n, b)| {
                let mut v = serde_json::json!({"rfilename": n, "size": b.len(), "blobId": git_oid(b)});
                if is_lfs(n) {
                    v["lfs"] = serde_json::json!({"sha256": hex::encode(sha2::Sha256::digest(b)), "size": b.len(), "pointerSize": 134});
                }
                v
            })
            .collect();
        let sha = match &repo.hostile {
            Some(Hostile::ListingSha(s)) => s.clone(),
            _ => COMMIT.to_string(),
        };
        let body = serde_json::to_vec(
            &serde_json::json!({"id": repo_id, "sha": sha, "siblings": siblings}),
        )
        .unwrap();
        return respond(
            &mut conn,
            "200 OK",
            &[("content-type", "application/json".into())],
            &body,
        );
    }
    let Some((_, bytes)) = repo.files.iter().find(|(n, _)| *n == file) else {
        return respond(&mut conn, "404 Not Found", &[], b"{}");
    };
    let mut bytes = bytes.clone();
    let etag_value = if is_lfs(&file) {
        hex::encode(sha2::Sha256::digest(&bytes))
    } else {
        git_oid(&bytes)
    };
    if repo.corrupt.contains(&file) {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xFF;
    }
    if let Some(Hostile::RedirectTo(to)) = &repo.hostile {
        return respond(&mut conn, "302 Found", &[("location", to.clone())], b"");
    }
    if let Some(Hostile::LongBody(n)) = &repo.hostile {
        bytes.extend(std::iter::repeat_n(b'x', *n));
    }
    let len = bytes.len();
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap_or((r, ""));
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().unwrap_or(len - 1).min(len - 1);
            (a, b)
        }
        None => (0, len - 1),
    };
    let mut hdrs = vec![
        ("x-repo-commit", COMMIT.to_string()),
        (
            "etag",
            format!(
                "\"{}\"",
                if is_lfs(&file) {
                    git_oid(b"pointer")
                } else {
                    etag_value.clone()
                }
            ),
        ),
        ("content-range", format!("bytes {start}-{end}/{len}")),
        ("accept-ranges", "bytes".into()),
    ];
    if is_lfs(&file) {
        hdrs.push(("x-linked-etag", format!("\"{etag_value}\"")));
        hdrs.push(("x-linked-size", len.to_string()));
    }
    match &repo.hostile {
        Some(Hostile::CommitHeader(c)) => hdrs[0].1 = c.clone(),
        Some(Hostile::Etag(e)) => {
            for h in hdrs.iter_mut() {
                if h.0 == "etag" || h.0 == "x-linked-etag" {
                    h.1 = format!("\"{e}\"");
                }
            }
        }
        _ => {}
    }
    let body = &bytes[start..=end];
    if let Some((f, at)) = &repo.drop_at {
        if *f == file && start <= *at && *at <= end && end > 0 {
            // Headers promise the whole range; the body breaks off at `at`.
            let mut head = format!(
                "HTTP/1.1 206 Partial Content\r\nconnection: close\r\ncontent-length: {}\r\n",
                body.len()
            );
            for (k, v) in &hdrs {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            conn.write_all(head.as_bytes())?;
            conn.write_all(&body[..at - start])?;
            conn.flush()?;
            return conn.shutdown(std::net::Shutdown::Both);
        }
    }
    respond(
        &mut conn,
        if range.is_some() {
            "206 Partial Content"
        } else {
            "200 OK"
        },
        &hdrs,
        body,
    )
}
