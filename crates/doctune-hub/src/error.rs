//! What can go wrong getting a model. Each message names the repository or file and says what to
//! do; none ever contains the token.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{repo}: this model needs an access token: add one in Settings")]
    TokenRequired { repo: String },
    #[error("{repo}: the Hub refused your access token for this model; check the token in Settings and accept the model's licence on its Hub page")]
    AccessDenied { repo: String },
    #[error("{repo}: no such model{} on the Hub", revision.as_deref().map(|r| format!(" at revision {r}")).unwrap_or_default())]
    NotFound {
        repo: String,
        revision: Option<String>,
    },
    #[error("{repo}: has only PyTorch pickle weights ({files}), which can run code when loaded; DocTune loads only safetensors. Look for a version of this model that ships .safetensors files")]
    PickleOnly { repo: String, files: String },
    #[error("{repo}: needs remote code (auto_map in config.json), which DocTune never runs; choose a model whose architecture is built into transformers")]
    RemoteCode { repo: String },
    #[error("{repo}: {reason}")]
    NotAModel { repo: String, reason: String },
    #[error("{file} from {repo} is corrupt: its {algo} is {actual} but the Hub lists {expected}; the downloaded file was deleted, pull again")]
    Corrupt {
        repo: String,
        file: String,
        algo: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{repo}: needs {needed} bytes of free disk space but {path} has {free}")]
    NoSpace {
        repo: String,
        needed: u64,
        free: u64,
        path: PathBuf,
    },
    #[error("the download was cancelled; pull again to resume")]
    Cancelled,
    #[error("{repo}: {file}: the download broke off ({detail}); pull again to resume")]
    Interrupted {
        repo: String,
        file: String,
        detail: String,
    },
    #[error("{what} cannot be trusted: it gave {detail}; the pull stopped and nothing was written outside DocTune's hub folder")]
    Untrusted { what: String, detail: String },
    #[error("HF_ENDPOINT {endpoint}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error(transparent)]
    Scope(#[from] doctune_core::ScopeError),
    #[error("cannot reach {endpoint}: {detail}")]
    Network { endpoint: String, detail: String },
    #[error("{path}: {reason}")]
    InvalidModel { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        HubError::InvalidModel {
            path: path.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HubError::Io {
            path: path.into(),
            source,
        }
    }
}
