//! Base models from the Hugging Face Hub or from a local folder — safe formats only.
//!
//! - [`files`]: which files of a repository DocTune ever downloads (safetensors, JSON configs and
//!   tokenizers, licences), and the refusal of pickle-only repositories.
//! - [`inspect`]: validation of a model folder — `config.json`, a supported architecture, no
//!   remote code, and safetensors headers checked (bounds, offsets, sizes, index coverage,
//!   shapes against the config) before anything maps a byte of weights.
//! - [`remote`]: [`HubClient`], which lists a repository with each file's hash, downloads through
//!   `hf-hub` (resumable, chunked) and checks every file against its hash itself, since `hf-hub`
//!   stores a body whose hash does not match without complaint.
//!
//! The access token comes in as a [`Sensitive`](doctune_secrets::Sensitive) and goes only into
//! the HTTP client's `Authorization` header.

mod error;
pub mod files;
pub mod inspect;
pub mod remote;

pub use error::HubError;
pub use inspect::{inspect_folder, ModelFolderInfo};
pub use remote::{HubClient, Pulled, RemoteFile, DEFAULT_ENDPOINT};
