//! The Hub: list a repository with every file's hash, download the allowed files through
//! `hf-hub` (chunked, resumable: an interrupted pull continues from the last whole chunk), and
//! check each file against its hash — sha256 for LFS files, the git blob id for small ones.
//! A mismatch deletes the file and fails. Progress is reported in bytes with speed and ETA;
//! the [`CancelToken`] is checked ten times a second.

use crate::files;
use crate::inspect::{check_config, inspect_folder, ModelFolderInfo};
use crate::HubError;
use doctune_core::units::human_bytes;
use doctune_core::{CancelToken, JobEvent, ProgressSink};
use doctune_secrets::Sensitive;
use hf_hub::api::tokio::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use serde::{Deserialize, Serialize};
use sha1::Digest as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Bytes per resumable chunk: an interrupted download loses at most this much.
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

/// A Hub client with DocTune's settings.
#[derive(Debug, Clone)]
pub struct HubClient {
    api: Api,
    endpoint: String,
    cache_dir: PathBuf,
    has_token: bool,
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
    /// A client for `endpoint` (`HF_ENDPOINT`, else the public Hub, when `None`) that keeps its
    /// downloads in `cache_dir` (Hugging Face's cache layout). The token is used only for the
    /// `Authorization` header; no token is ever read from a file.
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
        Ok(Self {
            api,
            endpoint,
            cache_dir: cache_dir.to_path_buf(),
            has_token: token.is_some(),
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

    fn map_err(&self, e: ApiError, repo: &str, file: &str) -> HubError {
        match e {
            ApiError::RequestError(r) => {
                if let Some(err) = r
                    .status()
                    .and_then(|s| self.status_error(repo, None, s.as_u16()))
                {
                    return err;
                }
                if r.is_connect() || r.is_timeout() && !r.is_body() {
                    self.network(r)
                } else {
                    HubError::Interrupted {
                        repo: repo.into(),
                        file: file.into(),
                        detail: r.to_string(),
                    }
                }
            }
            ApiError::TooManyRetries(inner) => self.map_err(*inner, repo, file),
            ApiError::IoError(io) => HubError::io(&self.cache_dir, io),
            other => HubError::Interrupted {
                repo: repo.into(),
                file: file.into(),
                detail: other.to_string(),
            },
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
        let files = listing
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
    /// result. `free_space` tells the free bytes of the disk holding a path.
    pub async fn pull(
        &self,
        repo: &str,
        revision: &str,
        free_space: &(dyn Fn(&Path) -> Option<u64> + Sync),
        sink: &dyn ProgressSink,
        cancel: &CancelToken,
    ) -> Result<Pulled, HubError> {
        let (commit, listing) = self.list(repo, revision).await?;
        let allowed = files::select(repo, listing.iter().map(|f| f.name.as_str()))?;
        let mut wanted: Vec<&RemoteFile> = listing
            .iter()
            .filter(|f| allowed.contains(&f.name))
            .collect();
        // config.json first: it decides whether the rest is worth fetching.
        wanted.sort_by_key(|f| (f.name != "config.json", f.name.clone()));

        let pinned = Self::repo(repo, &commit);
        let cache = Cache::new(self.cache_dir.clone()).repo(pinned.clone());
        let mut todo = Vec::new();
        for f in &wanted {
            match cache.get(&f.name) {
                Some(p) if verify(&p, f).is_ok() => {}
                Some(p) => remove_cached(&p),
                None => todo.push(*f),
            }
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

        let api_repo = self.api.repo(pinned);
        let started = Instant::now();
        let mut done_before = 0u64;
        for f in &todo {
            let counter = Counter::default();
            let fut = api_repo.download_with_progress(&f.name, counter.clone());
            tokio::pin!(fut);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let path = loop {
                tokio::select! {
                    r = &mut fut => break r.map_err(|e| self.map_err(e, repo, &f.name))?,
                    _ = tick.tick() => {
                        if cancel.is_cancelled() {
                            return Err(HubError::Cancelled);
                        }
                        let done = done_before + counter.get().min(f.size);
                        sink.emit(progress_event(&f.name, done, total, started));
                    }
                }
            };
            if let Err((algo, expected, actual)) = verify(&path, f) {
                remove_cached(&path);
                return Err(HubError::Corrupt {
                    repo: repo.into(),
                    file: f.name.clone(),
                    algo,
                    expected,
                    actual,
                });
            }
            if f.name == "config.json" {
                let config: serde_json::Value = std::fs::read(&path)
                    .ok()
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
        let dir = cache
            .get("config.json")
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .ok_or_else(|| HubError::NotAModel {
                repo: repo.into(),
                reason: "config.json is missing from the download".into(),
            })?;
        let info = inspect_folder(&dir)?;
        Ok(Pulled {
            repo: repo.into(),
            commit,
            dir,
            downloaded_bytes: total,
            info,
        })
    }
}

/// Counts bytes as hf-hub reports them.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

impl Counter {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl hf_hub::api::tokio::Progress for Counter {
    async fn init(&mut self, _size: usize, _filename: &str) {}
    async fn update(&mut self, size: usize) {
        self.0.fetch_add(size as u64, Ordering::Relaxed);
    }
    async fn finish(&mut self) {}
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
fn verify(path: &Path, f: &RemoteFile) -> Result<(), (&'static str, String, String)> {
    let mut file =
        std::fs::File::open(path).map_err(|e| ("file", "readable".into(), e.to_string()))?;
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

/// Removes a cached file: the snapshot link and the blob it points to.
fn remove_cached(pointer: &Path) {
    if let Ok(blob) = pointer.canonicalize() {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(pointer);
}
