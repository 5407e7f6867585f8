//! Errors of the model layer. Messages name the file or tensor and say what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("architecture `{architecture}` is not supported; DocTune supports {supported}")]
    Unsupported {
        architecture: String,
        supported: String,
    },
    #[error("{}: the weights are only in pickle files ({files}), which can run code when loaded; DocTune reads safetensors only — convert the model or download its .safetensors weights", dir.display())]
    PickleOnly { dir: PathBuf, files: String },
    #[error("{}: no weights found (model.safetensors or model.safetensors.index.json)", dir.display())]
    NoWeights { dir: PathBuf },
    #[error("{}: {message}", path.display())]
    Weights { path: PathBuf, message: String },
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the weights have no tensor `{name}`, which the config requires")]
    MissingTensor { name: String },
    #[error("tensor `{name}` has shape {found:?}; the config implies {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{}: {message}", path.display())]
    Adapter { path: PathBuf, message: String },
    #[error(transparent)]
    Tokenizer(#[from] doctune_tokenizer::TokenizerError),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Invalid(String),
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
