//! The Hub: list a repository with every file's hash, download the allowed files (resumable:
//! an interrupted pull continues from the last byte written), and check each file against its
//! hash — sha256 for LFS files, the git blob id for small ones. A mismatch deletes the file and
//! fails. Progress is reported in bytes with speed and ETA; the [`CancelToken`] is checked ten
//! times a second.
//!
//! Every answer is untrusted input. `hf-hub` builds the listing request and the URLs, but DocTune
//! downloads the files itself: `hf-hub` 0.4 joins the server's `X-Repo-Commit` header and ETag
//! into cache paths unchecked (a header of `../../x` or an absolute path writes outside the cache)
//! and buffers each chunk's body without a bound. Here the commit must be 40 hex characters and
//! equal the listing's, ETags must be hashes, the listing's hashes name the blobs, bodies never
//! pass the listed size, redirects are followed by hand (https only; the token never leaves the
//! endpoint's origin), and every write goes through [`RepoCache`]'s scope.

use crate::cache::{check_blob_hash, check_commit, check_repo_id, check_revision, RepoCache};
use crate::files;
use crate::inspect::{check_config, inspect_folder, ModelFolderInfo};
use crate::HubError;
use doctune_core::units::human_bytes;
use doctune_core::{CancelToken, JobEvent, ProgressSink};
use doctune_secrets::Sensitive;
use hf_hub::api::tokio::{Api, ApiBuilder};
use hf_hub::{Cache, Repo, RepoType};
use serde::{Deserialize, Serialize};
use sha1::Digest as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Bytes written between syncs of a partial download: a crash loses at most this much.
pub const DEFAULT_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// One file of a repository listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteFile {
    pub name: String,
    pub size: u64,
    /// sha256 of the content, for files stored in LFS.
    pub sha256: Option<String>,
    /// The git blob id (sha1 of `blob <len>\0<content>`), for files stored in git.
    pub git_oid: Option<String>,
}

/// A pulled model.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pulled {
    pub repo: String,
    pub commit: String,
    /// The snapshot folder holding the files.
    pub dir: PathBuf,
    pub downloaded_bytes: u64,
    pub info: ModelFolderInfo,
}

impl RemoteFile {
    /// The listed hash (sha256 for LFS files, else the git blob id): the file's blob name.
    pub fn hash(&self) -> &str {
        self.sha256
            .as_deref()
            .or(self.git_oid.as_deref())
            .unwrap_or("")
    }
}

/// A Hub client with DocTune's settings. Its `Debug` is redacted (see below).
#[derive(Clone)]
pub struct HubClient {
    api: Api,
    /// Requests to the endpoint's own origin: the token, no automatic redirects.
    http: reqwest::Client,
    /// Requests to the storage the Hub redirects to: no token, no automatic redirects.
    storage: reqwest::Client,
    endpoint: String,
    cache_dir: PathBuf,
    has_token: bool,
    chunk_bytes: usize,
}

#[derive(Deserialize)]
struct Listing {
    sha: String,
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    blob_id: Option<String>,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

impl HubClient {
    /// A client for `endpoint` (`HF_ENDPOINT`, else the public Hub, when `None`; checked with
    /// [`check_endpoint`]) that keeps its downloads in `cache_dir` (Hugging Face's cache layout).
    /// The token is used only for the `Authorization` header to the endpoint's origin. (`hf-hub`
    /// reads `<cache_dir>/../token` when its builder is made; DocTune replaces that value with
    /// the keychain's token or none, so such a file is read but never sent.)
    pub fn new(
        endpoint: Option<String>,
        cache_dir: &Path,
        token: Option<&Sensitive<String>>,
        chunk_bytes: usize,
    ) -> Result<Self, HubError> {
        let endpoint = endpoint
            .or_else(|| std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        check_endpoint(&endpoint)?;
        std::fs::create_dir_all(cache_dir).map_err(|e| HubError::io(cache_dir, e))?;
        let api = ApiBuilder::from_cache(Cache::new(cache_dir.to_path_buf()))
            .with_endpoint(endpoint.clone())
            .with_token(token.map(|t| t.expose().clone()))
            .with_progress(false)
            .with_chunk_size(Some(chunk_bytes.max(1)))
            .with_user_agent("doctune", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| HubError::Network {
                endpoint: endpoint.clone(),
                detail: e.to_string(),
            })?;
        let user_agent = concat!("doctune/", env!("CARGO_PKG_VERSION"));
        let build = |token: Option<&Sensitive<String>>| {
            let mut headers = reqwest::header::HeaderMap::new();
            if let Some(t) = token {
                let mut v =
                    reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.expose()))
                        .map_err(|_| HubError::Network {
                            endpoint: endpoint.clone(),
                            detail: "the stored token has characters an HTTP header cannot carry"
                                .into(),
                        })?;
                v.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
            reqwest::Client::builder()
                .user_agent(user_agent)
                .default_headers(headers)
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| HubError::Network {
                    endpoint: endpoint.clone(),
                    detail: e.to_string(),
                })
        };
        let (http, storage) = (build(token)?, build(None)?);
        Ok(Self {
            api,
            http,
            storage,
            endpoint,
            cache_dir: cache_dir.to_path_buf(),
            has_token: token.is_some(),
            chunk_bytes: chunk_bytes.max(1),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn repo(repo: &str, revision: &str) -> Repo {
        Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string())
    }

    fn network(&self, detail: impl std::fmt::Display) -> HubError {
        HubError::Network {
            endpoint: self.endpoint.clone(),
            detail: detail.to_string(),
        }
    }

    fn status_error(&self, repo: &str, revision: Option<&str>, status: u16) -> Option<HubError> {
        let repo = repo.to_string();
        match status {
            401 | 403 if !self.has_token => Some(HubError::TokenRequired { repo }),
            401 | 403 => Some(HubError::AccessDenied { repo }),
            404 => Some(HubError::NotFound {
                repo,
                revision: revision.map(str::to_string),
            }),
            _ => None,
        }
    }

    /// The files of `repo` at `revision`, with sizes and hashes, and the commit it resolves to.
    pub async fn list(
        &self,
        repo: &str,
        revision: &str,
    ) -> Result<(String, Vec<RemoteFile>), HubError> {
        let resp = self
            .api
            .repo(Self::repo(repo, revision))
            .info_request()
            .query(&[("blobs", "true")])
            .send()
            .await
            .map_err(|e| self.network(e))?;
        if let Some(err) = self.status_error(repo, Some(revision), resp.status().as_u16()) {
            return Err(err);
        }
        if !resp.status().is_success() {
            return Err(self.network(format!("listing {repo} answered HTTP {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| self.network(e))?;
        let listing: Listing = serde_json::from_slice(&body)
            .map_err(|e| self.network(format!("unexpected listing for {repo}: {e}")))?;
        check_commit(&listing.sha).map_err(|detail| HubError::Untrusted {
            what: format!("{}'s listing of {repo}", self.endpoint),
            detail,
        })?;
        let files: Vec<RemoteFile> = listing
            .siblings
            .into_iter()
            .map(|s| match s.lfs {
                Some(lfs) => RemoteFile {
                    name: s.rfilename,
                    size: lfs.size,
                    sha256: Some(lfs.sha256.to_ascii_lowercase()),
                    git_oid: None,
                },
                None => RemoteFile {
                    name: s.rfilename,
                    size: s.size.unwrap_or(0),
                    sha256: None,
                    git_oid: s.blob_id.map(|b| b.to_ascii_lowercase()),
                },
            })
            .collect();
        // The hashes of the files DocTune would take name blobs in the cache: check them now.
        for f in files.iter().filter(|f| files::is_allowed(&f.name)) {
            check_blob_hash(f.hash()).map_err(|d| HubError::Untrusted {
                what: format!("{}'s listing of {repo}", self.endpoint),
                detail: format!("{d} for {}", crate::cache::shown(&f.name)),
            })?;
        }
        Ok((listing.sha, files))
    }

    /// The account name the token belongs to (the Settings view's "Test" button).
    pub async fn whoami(&self) -> Result<String, HubError> {
        if !self.has_token {
            return Err(HubError::TokenRequired {
                repo: "the Hub".into(),
            });
        }
        let resp = self
            .api
            .client()
            .get(format!("{}/api/whoami-v2", self.endpoint))
            .send()
            .await
            .map_err(|e| self.network(e))?;
        if matches!(resp.status().as_u16(), 401 | 403) {
            return Err(HubError::AccessDenied {
                repo: "the Hub".into(),
            });
        }
        let body = resp.bytes().await.map_err(|e| self.network(e))?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| self.network(format!("unexpected whoami answer: {e}")))?;
        v.get("name")
            .and_then(|n| n.as_str())
            .map(str::to_string)
            .ok_or_else(|| self.network("whoami answer has no name"))
    }

    /// Downloads the allowed files of `repo` at `revision` into the cache and validates the
    /// result. `free_space` tells the free bytes of the disk holding a path; where it cannot
    /// (`None`), the pull goes ahead and a write that fails for lack of space stops it with
    /// [`HubError::NoSpace`], the partial file kept for the next pull to resume.
    pub async fn pull(
        &self,
        repo: &str,
        revision: &str,
        free_space: &(dyn Fn(&Path) -> Option<u64> + Sync),
        sink: &dyn ProgressSink,
        cancel: &CancelToken,
    ) -> Result<Pulled, HubError> {
        check_repo_id(repo)?;
        check_revision(repo, revision)?;
        let (commit, listing) = self.list(repo, revision).await?;
        let allowed = files::select(repo, listing.iter().map(|f| f.name.as_str()))?;
        let mut wanted: Vec<&RemoteFile> = listing
            .iter()
            .filter(|f| allowed.contains(&f.name))
            .collect();
        wanted.dedup_by(|a, b| a.name == b.name);
        // config.json first: it decides whether the rest is worth fetching.
        wanted.sort_by_key(|f| (f.name != "config.json", f.name.clone()));

        let cache = RepoCache::new(&self.cache_dir, repo)?;
        let mut todo = Vec::new();
        for f in &wanted {
            let hash = f.hash();
            if let Some(p) = cache.get(&commit, &f.name) {
                if verify(&cache, &p, f).is_ok() {
                    continue;
                }
                cache.remove(hash, Some((&commit, &f.name)));
            } else if let Ok(blob) = cache.blob(hash) {
                if blob.is_file() && verify(&cache, &blob, f).is_ok() {
                    cache.link(&commit, &f.name, hash)?;
                    continue;
                }
            }
            todo.push(*f);
        }
        let total: u64 = todo.iter().map(|f| f.size).sum();
        if let Some(free) = free_space(&self.cache_dir) {
            if free < total {
                return Err(HubError::NoSpace {
                    repo: repo.into(),
                    needed: total,
                    free,
                    path: self.cache_dir.clone(),
                });
            }
        }

        let api_repo = self.api.repo(Self::repo(repo, &commit));
        let started = Instant::now();
        let mut done_before = 0u64;
        for f in &todo {
            let url = api_repo.url(&f.name);
            let hash = f.hash();
            let partial = cache.partial(hash)?;
            let fetch = Fetch {
                client: self,
                repo,
                commit: &commit,
                file: f,
            };
            fetch
                .run(&url, &partial, &mut |got| {
                    if cancel.is_cancelled() {
                        return Err(HubError::Cancelled);
                    }
                    sink.emit(progress_event(&f.name, done_before + got, total, started));
                    Ok(())
                })
                .await
                .map_err(|e| self.no_space(e, repo, f.size))?;
            if let Err((algo, expected, actual)) = verify(&cache, &partial, f) {
                let _ = std::fs::remove_file(&partial);
                return Err(HubError::Corrupt {
                    repo: repo.into(),
                    file: f.name.clone(),
                    algo,
                    expected,
                    actual,
                });
            }
            let blob = cache.blob(hash)?;
            std::fs::rename(&partial, &blob).map_err(|e| HubError::io(&blob, e))?;
            let path = cache.link(&commit, &f.name, hash)?;
            if f.name == "config.json" {
                let config: serde_json::Value = read_cached(&cache, &path)
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .ok_or_else(|| HubError::NotAModel {
                        repo: repo.into(),
                        reason: "config.json is not valid JSON".into(),
                    })?;
                if config.get("auto_map").is_some() {
                    return Err(HubError::RemoteCode { repo: repo.into() });
                }
                check_config(&config, &path).map_err(|e| HubError::NotAModel {
                    repo: repo.into(),
                    reason: match e {
                        HubError::InvalidModel { reason, .. } => reason,
                        other => other.to_string(),
                    },
                })?;
            }
            done_before += f.size;
            sink.emit(progress_event(&f.name, done_before, total, started));
        }
        let dir = cache.snapshot_dir(&commit)?;
        if cache.get(&commit, "config.json").is_none() {
            return Err(HubError::NotAModel {
                repo: repo.into(),
                reason: "config.json is missing from the download".into(),
            });
        }
        cache.write_ref(revision, &commit)?;
        let info = inspect_folder(&dir)?;
        Ok(Pulled {
            repo: repo.into(),
            commit,
            dir,
            downloaded_bytes: total,
            info,
        })
    }

    /// A write that failed for lack of space, as [`HubError::NoSpace`].
    fn no_space(&self, e: HubError, repo: &str, needed: u64) -> HubError {
        match e {
            HubError::Io { path, source } if doctune_core::open::is_no_space(&source) => {
                HubError::NoSpace {
                    repo: repo.into(),
                    needed,
                    free: 0,
                    path,
                }
            }
            other => other,
        }
    }
}

impl std::fmt::Debug for HubClient {
    /// Redacted: the HTTP clients' `Debug` would print their default headers, which carry the
    /// token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("has_token", &self.has_token)
            .finish_non_exhaustive()
    }
}

/// The endpoint DocTune talks to: `https://`, or plain `http://` only on a loopback address
/// (a local mirror or a test server), with no credentials, query or fragment in the URL.
pub fn check_endpoint(endpoint: &str) -> Result<(), HubError> {
    let bad = |reason: &str| HubError::Endpoint {
        endpoint: crate::cache::shown(endpoint),
        reason: reason.into(),
    };
    let url = reqwest::Url::parse(endpoint).map_err(|e| bad(&format!("not a URL ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry a user name or password"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(bad(
            "plain http would send your token and receive models unencrypted; use https:// (http:// is accepted only for a loopback address: 127.0.0.1, ::1 or localhost)",
        )),
        _ => Err(bad("must be an https:// URL")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some(h) if h.eq_ignore_ascii_case("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// A value of a header, as text.
fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// An ETag without its weak marker and quotes.
fn normalize_etag(e: &str) -> &str {
    e.trim().trim_start_matches("W/").trim_matches('"')
}

/// One file's download: the Hub's answer checked, then the body streamed into the partial file
/// (appended to, so a broken-off download resumes where it stopped), never past the listed size.
struct Fetch<'a> {
    client: &'a HubClient,
    repo: &'a str,
    commit: &'a str,
    file: &'a RemoteFile,
}

/// At most this many redirects per file (the Hub sends one, to its storage).
const MAX_REDIRECTS: usize = 5;

impl Fetch<'_> {
    fn untrusted(&self, detail: String) -> HubError {
        HubError::Untrusted {
            what: format!("{}'s answer for {}", self.client.endpoint, self.file.name),
            detail,
        }
    }

    fn interrupted(&self, detail: impl std::fmt::Display) -> HubError {
        HubError::Interrupted {
            repo: self.repo.into(),
            file: self.file.name.clone(),
            detail: detail.to_string(),
        }
    }

    /// Checks the headers only the Hub itself sends (a storage server's ETags are its own).
    fn check_hub_headers(&self, r: &reqwest::Response) -> Result<(), HubError> {
        if let Some(c) = header(r, "x-repo-commit") {
            check_commit(c).map_err(|d| self.untrusted(d))?;
            if c != self.commit {
                return Err(self.untrusted(format!(
                    "commit {c} for a download pinned to commit {}",
                    self.commit
                )));
            }
        }
        for name in ["x-linked-etag", "etag"] {
            if let Some(e) = header(r, name) {
                check_blob_hash(normalize_etag(e))
                    .map_err(|d| self.untrusted(format!("{d} as its {name}")))?;
            }
        }
        if let (Some(e), Some(sha)) = (header(r, "x-linked-etag"), &self.file.sha256) {
            if normalize_etag(e) != sha {
                return Err(self.untrusted(format!(
                    "a file whose sha256 ({}) is not the one it listed ({sha})",
                    normalize_etag(e)
                )));
            }
        }
        Ok(())
    }

    /// Sends the request for bytes `start..` and follows redirects by hand, checking each hop.
    async fn request(&self, url: &str, start: u64) -> Result<reqwest::Response, HubError> {
        let c = self.client;
        let mut url = reqwest::Url::parse(url).map_err(|e| c.network(e))?;
        let origin = url.origin();
        for _ in 0..=MAX_REDIRECTS {
            // The token goes only to the Hub's own origin, never to the storage it redirects to.
            let http = if url.origin() == origin {
                &c.http
            } else {
                &c.storage
            };
            let mut req = http.get(url.clone());
            if start > 0 {
                req = req.header(reqwest::header::RANGE, format!("bytes={start}-"));
            }
            let r = req.send().await.map_err(|e| {
                if e.is_connect() || e.is_timeout() {
                    c.network(e)
                } else {
                    self.interrupted(e)
                }
            })?;
            if url.origin() == origin {
                self.check_hub_headers(&r)?;
            }
            let status = r.status().as_u16();
            if let Some(err) = c.status_error(self.repo, None, status) {
                return Err(err);
            }
            if r.status().is_redirection() {
                let loc = header(&r, "location")
                    .ok_or_else(|| self.untrusted("a redirect without a location".into()))?;
                let next = url
                    .join(loc)
                    .map_err(|e| self.untrusted(format!("a redirect to a bad URL ({e})")))?;
                if next.scheme() != "https" && !(next.scheme() == "http" && is_loopback(&next)) {
                    return Err(self.untrusted(format!(
                        "a redirect to {}, which is not https",
                        crate::cache::shown(next.as_str())
                    )));
                }
                url = next;
                continue;
            }
            if status == 416 && start == self.file.size {
                return Ok(r);
            }
            if !r.status().is_success() {
                return Err(c.network(format!("{} answered HTTP {status}", self.file.name)));
            }
            return Ok(r);
        }
        Err(self.untrusted(format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// Downloads into `partial` (resuming from its length); `tick(bytes so far)` runs about ten
    /// times a second and stops the download when it returns an error (a cancel).
    async fn run(
        &self,
        url: &str,
        partial: &Path,
        tick: &mut dyn FnMut(u64) -> Result<(), HubError>,
    ) -> Result<(), HubError> {
        use std::io::Write as _;
        let size = self.file.size;
        let mut out = match doctune_core::open::open_append(partial) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                doctune_core::open::create_new(partial).map_err(|e| HubError::io(partial, e))?
            }
            Err(e) => return Err(HubError::io(partial, e)),
        };
        let io = |e| HubError::io(partial, e);
        let mut have = out.metadata().map_err(io)?.len();
        if have > size {
            out.set_len(0).map_err(io)?;
            have = 0;
        }
        if have == size {
            return Ok(());
        }
        tick(have)?;
        let mut resp = self.request(url, have).await?;
        match resp.status().as_u16() {
            206 => {
                let range = header(&resp, "content-range").unwrap_or("");
                let expect = format!("bytes {have}-{}/{size}", size - 1);
                if range != expect {
                    return Err(self.untrusted(format!(
                        "the range {} where {expect} was asked for",
                        crate::cache::shown(range)
                    )));
                }
            }
            _ => {
                // The whole file (the server ignored the range): start again from its first byte.
                out.set_len(0).map_err(io)?;
                have = 0;
            }
        }
        if let Some(len) = resp.content_length() {
            if len > size - have {
                return Err(self.untrusted(format!(
                    "a body of {len} bytes where the listing leaves {} to fetch",
                    size - have
                )));
            }
        }
        let chunk_bytes = self.client.chunk_bytes as u64;
        let mut unsynced = 0u64;
        let mut timer = tokio::time::interval(Duration::from_millis(100));
        loop {
            let chunk = tokio::select! {
                c = resp.chunk() => c.map_err(|e| self.interrupted(e))?,
                _ = timer.tick() => {
                    tick(have)?;
                    continue;
                }
            };
            let Some(chunk) = chunk else { break };
            if have + chunk.len() as u64 > size {
                return Err(self.untrusted(format!(
                    "more than the {size} bytes its listing gave for this file"
                )));
            }
            out.write_all(&chunk).map_err(io)?;
            have += chunk.len() as u64;
            unsynced += chunk.len() as u64;
            if unsynced >= chunk_bytes {
                out.sync_data().map_err(io)?;
                unsynced = 0;
            }
        }
        out.sync_data().map_err(io)?;
        if have < size {
            return Err(self.interrupted(format!("the body ended at {have} of {size} bytes")));
        }
        tick(have)
    }
}

/// A cached file's bytes (at most the JSON limit), read through the cache's scope.
fn read_cached(cache: &RepoCache, path: &Path) -> Option<Vec<u8>> {
    let mut f = cache.open(path).ok()?;
    doctune_core::open::read_to_end_limited(&mut f, crate::inspect::MAX_JSON_BYTES).ok()
}

fn progress_event(file: &str, done: u64, total: u64, started: Instant) -> JobEvent {
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let speed = done as f64 / secs;
    let mut message = format!("{file} · {}/s", human_bytes(speed as u64));
    if speed > 0.0 && total > done {
        message.push_str(&format!(" · {:.0} s left", (total - done) as f64 / speed));
    }
    JobEvent::progress(done, total, "bytes", Some(message))
}

/// Checks a downloaded file against the listing: `Err((algorithm, expected, actual))`.
fn verify(
    cache: &RepoCache,
    path: &Path,
    f: &RemoteFile,
) -> Result<(), (&'static str, String, String)> {
    let mut file = cache
        .open(path)
        .map_err(|e| ("file", "readable".into(), e.to_string()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len != f.size {
        return Err(("size", f.size.to_string(), len.to_string()));
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut digest = |update: &mut dyn FnMut(&[u8])| -> std::io::Result<()> {
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            update(&buf[..n]);
        }
    };
    if let Some(expected) = &f.sha256 {
        let mut h = sha2::Sha256::new();
        digest(&mut |b| h.update(b)).map_err(|e| ("sha256", expected.clone(), e.to_string()))?;
        let actual = hex::encode(h.finalize());
        return if &actual == expected {
            Ok(())
        } else {
            Err(("sha256", expected.clone(), actual))
        };
    }
    if let Some(expected) = &f.git_oid {
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {len}\0").as_bytes());
        digest(&mut |b| h.update(b))
            .map_err(|e| ("git blob id", expected.clone(), e.to_string()))?;
        let actual = hex::encode(h.finalize());
        return if &actual == expected {
            Ok(())
        } else {
            Err(("git blob id", expected.clone(), actual))
        };
    }
    Err(("hash", "a hash in the listing".into(), "none listed".into()))
}
