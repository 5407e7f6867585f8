//! Base models from the Hugging Face Hub or from a local folder — safe formats only.
//!
//! - [`files`]: which files of a repository DocTune ever downloads (safetensors, JSON configs and
//!   tokenizers, licences), and the refusal of pickle-only repositories.
//! - [`inspect`]: validation of a model folder — `config.json`, a supported architecture, no
//!   remote code, and safetensors headers checked (bounds, offsets, sizes, index coverage,
//!   shapes against the config) before anything maps a byte of weights.
//! - [`remote`]: [`HubClient`], which lists a repository with each file's hash, downloads the
//!   allowed files itself (resumable; every header and body of the answer checked as untrusted
//!   input) and checks every file against its hash.
//! - [`cache`]: the one owner of the `hub/` folder's layout (Hugging Face's cache layout); every
//!   name that reaches a path there is checked, every write goes through its scope.
//!
//! The access token comes in as a [`Sensitive`](doctune_secrets::Sensitive) and goes only into
//! the HTTP client's `Authorization` header.

pub mod cache;
mod error;
pub mod files;
pub mod inspect;
pub mod remote;

pub use error::HubError;
pub use inspect::{inspect_folder, ModelFolderInfo};
pub use remote::{check_endpoint, HubClient, Pulled, RemoteFile, DEFAULT_ENDPOINT};
