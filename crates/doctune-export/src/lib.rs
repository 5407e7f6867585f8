//! Exports of a finished training run (or any of its checkpoints), every format written by
//! DocTune itself — no Python, no compiled llama.cpp — and each one checked by the program it is
//! for (`tests/` and `tests/fixtures/oracle.py`).
//!
//! Start here: [`export`] reads the run ([`source`]: its `run.json`, base model and trained
//! weights), checks free disk against an estimate, builds the export in a staged folder beside
//! its destination and renames it into place when complete (a cancel, a crash or an error leaves
//! nothing behind; an existing export is replaced only when asked). Every export has a model card
//! (`README.md`, [`card`]) and a `manifest.json` with the size and sha256 of each file.
//!
//! - [`Format::Peft`]: `adapter_config.json` + `adapter_model.safetensors` ([`peft`]).
//! - [`Format::Merged`]: a Hugging Face model folder, the adapter folded in, in f32/bf16/f16,
//!   sharded at 5 GB ([`hf`]; the weights come one tensor at a time from [`weights`]).
//! - [`Format::Gguf`]: GGUF v3 with llama.cpp's architecture, tensor names, hyper-parameters and
//!   tokenizer metadata, in F16 … Q4_K_M with llama.cpp's mix rules ([`gguf`]).
//! - [`Format::GgufLora`]: the adapter alone as a GGUF LoRA for llama.cpp/Ollama's `ADAPTER`.
//! - [`Format::Ollama`]: the GGUF plus a `Modelfile` whose `TEMPLATE` reproduces the model's
//!   own chat template, with the family's stop tokens ([`ollama`]).

pub mod bundle;
pub mod card;
pub mod gguf;
pub mod hf;
pub mod manifest;
pub mod ollama;
pub mod peft;
pub mod source;
pub mod weights;

pub use gguf::file::GgmlType;
pub use gguf::quant::Quant;
pub use manifest::{ExportedFile, Manifest};

use doctune_core::{CancelToken, JobEvent, ProgressSink, StagedDir};
use serde::{Deserialize, Serialize};
use source::Source;
use std::path::{Path, PathBuf};

/// What can go wrong exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// A file the export reads is not what it must be.
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    /// The model has something a format cannot express.
    #[error("{0}")]
    Unsupported(String),
    #[error("{} already exists; choose another folder, or ask to overwrite it", path.display())]
    Exists { path: PathBuf },
    #[error("the export needs about {} but {} has {} free", doctune_core::units::human_bytes(*needed), path.display(), doctune_core::units::human_bytes(*available))]
    NoSpace {
        needed: u64,
        available: u64,
        path: PathBuf,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Model(#[from] doctune_models::ModelError),
    #[error(transparent)]
    Train(#[from] doctune_train::TrainError),
    #[error(transparent)]
    Tokenizer(#[from] doctune_tokenizer::TokenizerError),
    #[error(transparent)]
    Dataset(#[from] doctune_dataset::DatasetError),
    #[error("export computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("cancelled")]
    Cancelled,
}

/// `ExportError::Io` on `path`, for `map_err`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn check_cancel(cancel: &CancelToken) -> Result<(), ExportError> {
    if cancel.is_cancelled() {
        Err(ExportError::Cancelled)
    } else {
        Ok(())
    }
}

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    /// The LoRA adapter in PEFT's layout.
    Peft,
    /// A Hugging Face model folder with the adapter merged in.
    Merged,
    /// The merged model as one GGUF file.
    Gguf,
    /// The adapter as a GGUF LoRA (for `llama.cpp --lora` and Ollama's `ADAPTER`).
    GgufLora,
    /// The GGUF and an Ollama `Modelfile`.
    Ollama,
}

impl std::str::FromStr for Format {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self, ExportError> {
        Ok(match s {
            "peft" => Format::Peft,
            "merged" => Format::Merged,
            "gguf" => Format::Gguf,
            "gguf-lora" => Format::GgufLora,
            "ollama" => Format::Ollama,
            other => {
                return Err(ExportError::Invalid(format!(
                    "unknown export format `{other}` (use peft, merged, gguf, gguf-lora or ollama)"
                )))
            }
        })
    }
}

impl Format {
    /// Every format, in the order a person is offered them (the most used first).
    pub const ALL: [Format; 5] = [
        Format::Gguf,
        Format::Ollama,
        Format::Peft,
        Format::Merged,
        Format::GgufLora,
    ];

    /// The GGUF types this format is written in (the first is its default); none for the
    /// formats that are not GGUF.
    pub fn quants(self) -> &'static [Quant] {
        use Quant::*;
        match self {
            Format::Gguf | Format::Ollama => &[Q4KM, Q5KM, Q6K, Q8_0, Q4_0, F16, Bf16, F32],
            Format::GgufLora => &[F16, Q8_0, Bf16, F32],
            Format::Peft | Format::Merged => &[],
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Format::Peft => "PEFT adapter",
            Format::Merged => "merged Hugging Face model",
            Format::Gguf => "GGUF",
            Format::GgufLora => "GGUF LoRA adapter",
            Format::Ollama => "GGUF + Ollama Modelfile",
        }
    }
}

/// The dtype of a merged model's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Dtype {
    F32,
    #[default]
    Bf16,
    F16,
}

/// The name `--dtype` and the API take (`bf16`).
impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        })
    }
}

impl std::str::FromStr for Dtype {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self, ExportError> {
        Ok(match s {
            "f32" => Dtype::F32,
            "bf16" => Dtype::Bf16,
            "f16" => Dtype::F16,
            other => {
                return Err(ExportError::Invalid(format!(
                    "unknown dtype `{other}` (use f32, bf16 or f16)"
                )))
            }
        })
    }
}

impl Dtype {
    pub(crate) fn candle(self) -> candle_core::DType {
        match self {
            Dtype::F32 => candle_core::DType::F32,
            Dtype::Bf16 => candle_core::DType::BF16,
            Dtype::F16 => candle_core::DType::F16,
        }
    }
    /// The name transformers writes in `config.json` (`torch_dtype` / `dtype`).
    pub(crate) fn torch_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::Bf16 => "bfloat16",
            Dtype::F16 => "float16",
        }
    }
}

/// What to export: the format and its settings (everything but where from and where to, so
/// the shells pass this as it is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportOptions {
    pub format: Format,
    /// GGUF tensor types (gguf, ollama; gguf-lora takes f32, f16, bf16 or q8_0).
    #[serde(default)]
    pub quant: Quant,
    /// The merged model's dtype.
    #[serde(default)]
    pub dtype: Dtype,
    /// Export this checkpoint's weights instead of the run's final ones.
    #[serde(default)]
    pub checkpoint: Option<u64>,
    /// A system message for the Modelfile (`SYSTEM`).
    #[serde(default)]
    pub system: Option<String>,
    /// Replace an existing export at the destination.
    #[serde(default)]
    pub overwrite: bool,
}

/// An export to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportRequest {
    /// The training run's folder.
    pub run_dir: PathBuf,
    /// The folder to create (it must not exist, unless `options.overwrite`).
    pub out: PathBuf,
    /// The base model's name for people and for `base_model_name_or_path` (a Hub repo id when
    /// the model came from the Hub); the base folder's name when not given.
    #[serde(default)]
    pub base_name: Option<String>,
    #[serde(flatten)]
    pub options: ExportOptions,
}

/// A GGUF tensor stored in another type than the quantisation asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    pub tensor: String,
    pub wanted: GgmlType,
    pub used: GgmlType,
    pub reason: String,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportReport {
    pub dir: PathBuf,
    pub format: Format,
    pub files: Vec<ExportedFile>,
    pub total_bytes: u64,
    /// What the user should know (a setting llama.cpp does not support, a chosen pre-tokenizer).
    pub warnings: Vec<String>,
    pub fallbacks: Vec<Fallback>,
    /// `ollama create …` for an Ollama export.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ollama_create: Option<String>,
}

/// Exports `req` (see the crate docs). `free_disk` tells the free bytes at a path (`None` when
/// unknown: the export then finds out by writing, and a full disk is an error that leaves
/// nothing behind).
pub fn export(
    req: &ExportRequest,
    free_disk: &dyn Fn(&Path) -> Option<u64>,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<ExportReport, ExportError> {
    let src = Source::open(&req.run_dir, req.options.checkpoint)?;
    let name = req
        .out
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && !n.starts_with('.'))
        .ok_or_else(|| {
            ExportError::Invalid(format!(
                "{}: not a folder name to export into",
                req.out.display()
            ))
        })?
        .to_string();
    if req.out.exists() && !req.options.overwrite {
        return Err(ExportError::Exists {
            path: req.out.clone(),
        });
    }
    let parent = req
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;

    // What the export will write, planned before anything is: the estimate the disk check uses.
    let plan = Plan::new(&req.options, &src)?;
    let needed = plan.bytes + (16 << 20);
    if let Some(available) = free_disk(&parent) {
        if available < needed {
            return Err(ExportError::NoSpace {
                needed,
                available,
                path: parent,
            });
        }
    }

    let staged = StagedDir::new_in(&parent, &name).map_err(io(&parent))?;
    let mut warnings = Vec::new();
    let mut fallbacks = Vec::new();
    let mut ollama_create = None;
    let mut hashed = Vec::new();
    let stem = file_stem(&src);
    match req.options.format {
        Format::Peft => peft::write(staged.path(), &src, req, sink, cancel)?,
        Format::Merged => hashed = hf::write(staged.path(), &src, req.options.dtype, sink, cancel)?,
        Format::Gguf | Format::Ollama => {
            let file = format!("{stem}-{}.gguf", req.options.quant.label());
            let model = plan.model.ok_or_else(|| {
                ExportError::Invalid("a GGUF export was planned without its GGUF plan".into())
            })?;
            let out = gguf::write_model(&staged.path().join(&file), &src, model, sink, cancel)?;
            warnings.extend(out.warnings);
            fallbacks = out.fallbacks;
            hashed.extend(out.hash);
            if req.options.format == Format::Ollama {
                ollama::write(staged.path(), &file, &src, req.options.system.as_deref())?;
                ollama_create = Some(format!(
                    "ollama create {} -f {}",
                    ollama::model_name(&name),
                    req.out.join(ollama::MODELFILE).display()
                ));
            }
        }
        Format::GgufLora => {
            let file = format!("{stem}-lora-{}.gguf", req.options.quant.label());
            let out = gguf::write_lora(
                &staged.path().join(&file),
                &src,
                req.options.quant,
                sink,
                cancel,
            )?;
            warnings.extend(out.warnings);
            hashed.extend(out.hash);
        }
    }
    check_cancel(cancel)?;
    card::write(staged.path(), &src, req, &warnings)?;
    let manifest = manifest::write(staged.path(), req, &src, &warnings, &fallbacks, &hashed)?;

    // Into place: a new folder, or (asked to overwrite) the old one moved aside first.
    let dest = if req.out.exists() {
        let old = parent.join(format!(".{name}-replaced-{}", std::process::id()));
        std::fs::rename(&req.out, &old).map_err(io(&req.out))?;
        match staged.commit(&name) {
            Ok(d) => {
                let _ = std::fs::remove_dir_all(&old);
                d
            }
            Err(e) => {
                let _ = std::fs::rename(&old, &req.out);
                return Err(io(&req.out)(e));
            }
        }
    } else {
        staged.commit(&name).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => ExportError::Exists {
                path: req.out.clone(),
            },
            _ => io(&req.out)(e),
        })?
    };
    sink.emit(JobEvent::progress(
        1,
        1,
        "exports",
        Some(dest.display().to_string()),
    ));
    Ok(ExportReport {
        total_bytes: manifest.files.iter().map(|f| f.bytes).sum(),
        files: manifest.files,
        dir: dest,
        format: req.options.format,
        warnings,
        fallbacks,
        ollama_create,
    })
}

/// What exporting the run in `run_dir` with `options` will write, in bytes: the estimate the
/// export's own free-disk check uses, for showing before the user starts it.
pub fn estimate(run_dir: &Path, options: &ExportOptions) -> Result<u64, ExportError> {
    let src = Source::open(run_dir, options.checkpoint)?;
    Ok(Plan::new(options, &src)?.bytes)
}

/// A file name stem for GGUF files: the base model's folder name, made safe.
fn file_stem(src: &Source) -> String {
    let raw = src
        .base_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches(['-', '.']).to_string();
    if s.is_empty() {
        "model".into()
    } else {
        s
    }
}

/// The export's expected size and, for a merged GGUF, the file's plan (made once: it reads the
/// vocabulary and every tensor's header, and the writer follows it).
struct Plan {
    bytes: u64,
    model: Option<gguf::ModelPlan>,
}

impl Plan {
    fn new(options: &ExportOptions, src: &Source) -> Result<Self, ExportError> {
        let weights = src.weights()?;
        let params: u64 = weights.parameter_count()?;
        let (bytes, model) = match options.format {
            Format::Peft => (src.lora()?.bytes(), None),
            Format::Merged => {
                let per = if options.dtype == Dtype::F32 { 4 } else { 2 };
                (params * per, None)
            }
            Format::Gguf | Format::Ollama => {
                let plan = gguf::plan_model(src, options.quant)?;
                (plan.bytes, Some(plan))
            }
            Format::GgufLora => (src.lora()?.bytes(), None),
        };
        // Only the merged folder carries the tokenizer files; a GGUF holds its vocabulary (in
        // the plan's bytes) and an adapter uses the base model's.
        let tokenizer = match options.format {
            Format::Merged => src.tokenizer_bytes(),
            _ => 0,
        };
        Ok(Self {
            bytes: bytes + tokenizer,
            model,
        })
    }
}
