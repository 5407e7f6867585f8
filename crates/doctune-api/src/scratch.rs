//! Training from scratch: a new model made for a project — a byte-level BPE tokenizer trained on
//! the project's extracted documents (`doctune_tokenizer::train`) and a Llama model of a size
//! preset or explicit dimensions, initialised as transformers initialises a new one
//! (`doctune_models::scratch`) — registered in the model library like any other, so datasets,
//! runs, the Playground and every export treat it as a base model. [`train`] is `--method
//! scratch`: the model, a pretraining dataset with its tokenizer, and a run of every weight with
//! [`RunConfig::from_scratch`]'s settings.

use crate::models::{register, ModelSource};
use crate::train::{RunConfig, RunOverrides, RunSummary};
use crate::{dataset, projects, ApiError, Home, ModelEntry};
use doctune_core::{CancelToken, JobEvent, ProgressSink, Scope, StagedDir};
use doctune_dataset::{BuildOptions, Mode};
use doctune_models::scratch::NewLlama;
pub use doctune_models::scratch::{ScratchDims, ScratchSize};
use doctune_tokenizer::train as bpe;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The new model to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScratchRequest {
    pub size: ScratchSize,
    /// Explicit dimensions, instead of the size preset's.
    pub dims: Option<ScratchDims>,
    /// The most tokens of the new vocabulary (default: the preset's; fewer when the documents
    /// have fewer word pieces seen twice).
    pub vocab_size: Option<usize>,
    /// Seeds the initial weights.
    pub seed: u64,
}

impl Default for ScratchRequest {
    fn default() -> Self {
        Self {
            size: ScratchSize::Tiny,
            dims: None,
            vocab_size: None,
            seed: 0,
        }
    }
}

/// Trains the tokenizer on the project's extracted documents, creates the model and adds it to
/// the library (as `<project>-<size>`, numbered when taken).
pub fn create_model(
    home: &Home,
    project_dir: &Path,
    req: &ScratchRequest,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<ModelEntry, ApiError> {
    let project = projects::open(project_dir)?;
    let docs = dataset::extracted_documents(project_dir, "train a tokenizer on", sink)?;
    let vocab_wanted = req.vocab_size.unwrap_or(req.size.vocab_size());
    let mut new = NewLlama {
        dims: req.dims.unwrap_or(req.size.dims()),
        vocab_size: vocab_wanted,
        bos_token_id: bpe::BOS_ID,
        eos_token_ids: vec![bpe::EOS_ID, bpe::END_OF_TURN_ID],
        pad_token_id: Some(bpe::PAD_ID),
        initializer_range: 0.02,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        tie_word_embeddings: true,
    };
    // The dimensions are checked before the tokenizer is trained.
    new.validate()?;
    sink.emit(JobEvent::progress(
        0,
        3,
        "steps",
        Some(format!(
            "training a tokenizer of up to {vocab_wanted} tokens"
        )),
    ));
    let tok = bpe::train_bpe(docs.iter().map(|d| d.text.as_str()), vocab_wanted)?;
    if cancel.is_cancelled() {
        return Err(ApiError::new(doctune_core::Code::Cancelled, "cancelled"));
    }
    new.vocab_size = tok.get_vocab_size(true);
    new.validate()?;
    sink.emit(JobEvent::progress(
        1,
        3,
        "steps",
        Some(format!(
            "initialising a {} model of {} parameters",
            req.size.label(),
            new.parameter_count()
        )),
    ));
    let models = home.models_dir();
    std::fs::create_dir_all(&models).map_err(|e| ApiError::io(&models, "cannot create", &e))?;
    let scope = Scope::new(&models)?;
    let staging = StagedDir::new_in(scope.root(), "scratch")
        .map_err(|e| ApiError::io(&models, "cannot create", &e))?;
    bpe::write_files(staging.path(), &tok)?;
    new.write(staging.path(), req.seed)?;
    let size = if req.dims.is_some() {
        "custom"
    } else {
        req.size.label()
    };
    let base = crate::projects::slug(&format!("{}-{size}", project.summary.name));
    let names = std::iter::once(base.clone()).chain((2..).map(|n| format!("{base}-{n}")));
    let dest = staging
        .commit_first(names.take(10_000))
        .map_err(|e| ApiError::io(&models, "cannot move the new model into place", &e))?;
    let info = doctune_hub::inspect_folder(&dest)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(base);
    sink.emit(JobEvent::progress(
        2,
        3,
        "steps",
        Some(dest.display().to_string()),
    ));
    register(
        home,
        &name,
        &info,
        ModelSource::Scratch {
            project: project.summary.name,
            size: size.to_string(),
            documents: docs.len(),
        },
    )
}

/// What `--method scratch` needs besides the model: the dataset's options and the run's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScratchTrainRequest {
    pub model: ScratchRequest,
    /// Tokens per example (default 256).
    pub seq_len: Option<usize>,
    /// Settings over [`RunConfig::from_scratch`].
    pub overrides: RunOverrides,
}

/// The dataset options a scratch run uses: pretraining windows of `seq_len` tokens.
pub fn dataset_options(seq_len: Option<usize>) -> BuildOptions {
    BuildOptions {
        mode: Mode::Pretrain,
        seq_len: seq_len.unwrap_or(256),
        ..BuildOptions::default()
    }
}

/// The settings of a scratch run on `dataset_dir`: [`RunConfig::from_scratch`] with `overrides`
/// on top (a method other than full is refused: every weight of a new model is trained).
pub fn settings(dataset_dir: &Path, overrides: &RunOverrides) -> Result<RunConfig, ApiError> {
    if overrides
        .method
        .is_some_and(|m| m != crate::train::MethodKind::Full)
    {
        return Err(ApiError::invalid(
            "a model trained from scratch trains every weight; LoRA needs a trained base model",
        ));
    }
    let mut config = overrides.apply(RunConfig::from_scratch());
    config.dataset = dataset_dir.to_path_buf();
    Ok(config)
}

/// `--method scratch`: creates the model, builds the dataset with its tokenizer, and trains.
/// `on_start` receives the run folder as soon as it exists.
pub fn train(
    home: &Home,
    project_dir: &Path,
    req: &ScratchTrainRequest,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
    on_start: &mut dyn FnMut(&Path),
) -> Result<RunSummary, ApiError> {
    let model = create_model(home, project_dir, &req.model, sink, cancel)?;
    let ds = dataset::build(
        home,
        project_dir,
        &dataset::DatasetRequest {
            model: model.id.clone(),
            inputs: Vec::new(),
            options: dataset_options(req.seq_len),
        },
        sink,
        cancel,
    )?;
    let mut config = settings(Path::new(&ds.path), &req.overrides)?;
    config.base_model = model.id.into();
    crate::train::start(home, project_dir, config, sink, cancel, on_start)
}
