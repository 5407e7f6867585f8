//! The built-in demo: DocTune's whole job on a corpus it ships — its own user guide, six
//! Markdown pages plus the same pages as a PDF and a DOCX (made from the pages by
//! `doctune-testkit`'s `make-demo-corpus`), embedded in the binary. [`run`] creates the project
//! *DocTune demo*, adds and extracts the documents, trains a "tiny" model from scratch on the
//! CPU ([`crate::scratch`]), exports it for Ollama (GGUF + Modelfile) and as a merged Hugging
//! Face folder, measures its validation loss against two baselines (the unigram entropy of the
//! validation tokens, and the untrained model's loss) and generates a sample continuation.
//!
//! Running it again reuses what is there: the project, the documents (deduplicated), their
//! extractions (cached), the model, the dataset, the run (resumed from its checkpoint when it
//! was stopped) and the exports — found by what made them, so nothing else needs recording.

use crate::export::{ExportInfo, ExportOptions};
use crate::generate::{GenerateRequest, ModelCache};
use crate::models::ModelSource;
use crate::scratch::{dataset_options, ScratchRequest};
use crate::train::{RunConfig, RunInfo, RunOverrides};
use crate::{dataset, export, ingest, models, projects, scratch, train, ApiError, Home};
use doctune_core::{CancelToken, JobEvent, ProgressSink};
use doctune_dataset::{DatasetDir, Split};
use doctune_export::{Dtype, Format, Quant};
use doctune_models::scratch::ScratchSize;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The demo project's name.
pub const PROJECT_NAME: &str = "DocTune demo";
/// Optimiser steps of the demo's run (about three minutes on two CPU cores).
pub const DEFAULT_STEPS: u64 = 240;
/// Examples per step.
pub const MICRO_BATCH: usize = 4;
/// The Ollama model name the demo suggests.
pub const OLLAMA_NAME: &str = "doctune-demo";
/// Tokens per training example.
pub const SEQ_LEN: usize = 128;
/// The prompt the sample continues.
pub const PROMPT: &str = "DocTune is";

/// The demo's documents (name, bytes), as they are committed in `crates/doctune-api/demo/`.
pub const DOCUMENTS: &[(&str, &[u8])] = &[
    ("01-welcome.md", include_bytes!("../demo/01-welcome.md")),
    (
        "02-projects-and-documents.md",
        include_bytes!("../demo/02-projects-and-documents.md"),
    ),
    ("03-datasets.md", include_bytes!("../demo/03-datasets.md")),
    ("04-training.md", include_bytes!("../demo/04-training.md")),
    (
        "05-chat-and-export.md",
        include_bytes!("../demo/05-chat-and-export.md"),
    ),
    (
        "06-privacy-and-questions.md",
        include_bytes!("../demo/06-privacy-and-questions.md"),
    ),
    (
        "doctune-guide.pdf",
        include_bytes!("../demo/doctune-guide.pdf"),
    ),
    (
        "doctune-guide.docx",
        include_bytes!("../demo/doctune-guide.docx"),
    ),
];

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoOptions {
    /// Optimiser steps (default [`DEFAULT_STEPS`]; CI uses a few).
    pub steps: u64,
    pub prompt: String,
    /// New tokens of the sample.
    pub sample_tokens: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            steps: DEFAULT_STEPS,
            prompt: PROMPT.into(),
            sample_tokens: 48,
        }
    }
}

/// What the demo made and measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoReport {
    pub project_dir: String,
    pub documents: usize,
    pub model_id: String,
    pub model_dir: String,
    pub parameters: u64,
    pub vocab_size: usize,
    pub dataset_dir: String,
    pub train_tokens: u64,
    pub val_tokens: u64,
    pub run_dir: String,
    pub steps: u64,
    /// Validation loss of the trained model (nats per token).
    pub val_loss: f64,
    /// The entropy of the validation tokens' own unigram distribution (nats): what the best
    /// model that ignores context would score.
    pub unigram_entropy: f64,
    /// The validation loss of the model before training.
    pub untrained_loss: f64,
    /// The Ollama export (GGUF + Modelfile).
    pub export_dir: String,
    pub gguf: String,
    pub modelfile: String,
    /// The merged Hugging Face folder (what `doctune generate` and transformers load).
    pub merged_dir: String,
    pub ollama_create: String,
    pub prompt: String,
    pub sample: String,
    /// The stages that reused what an earlier demo made.
    pub reused: Vec<String>,
    pub seconds: f64,
}

/// The stages, for progress events.
const STAGES: [&str; 8] = [
    "project",
    "documents",
    "model",
    "dataset",
    "training",
    "export",
    "evaluation",
    "sample",
];

fn stage(sink: &dyn ProgressSink, i: usize, what: String) {
    sink.emit(JobEvent::progress(
        i as u64,
        STAGES.len() as u64,
        "stages",
        Some(format!("{}: {what}", STAGES[i])),
    ));
}

/// The demo project, created when missing.
fn project(home: &Home) -> Result<(PathBuf, bool), ApiError> {
    if let Some(p) = projects::list(home)?
        .into_iter()
        .find(|p| p.name == PROJECT_NAME)
    {
        return Ok((PathBuf::from(p.path), true));
    }
    let p = projects::create(home, PROJECT_NAME)?;
    Ok((PathBuf::from(p.path), false))
}

/// The documents written out under the home (unchanged files left as they are).
fn write_documents(home: &Home) -> Result<Vec<PathBuf>, ApiError> {
    let dir = home.demo_dir();
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::io(&dir, "cannot create", &e))?;
    DOCUMENTS
        .iter()
        .map(|(name, bytes)| {
            let p = dir.join(name);
            if std::fs::read(&p).ok().as_deref() != Some(*bytes) {
                doctune_core::write_atomic(&p, bytes)
                    .map_err(|e| ApiError::io(&p, "cannot write", &e))?;
            }
            Ok(p)
        })
        .collect()
}

/// The demo's scratch model, made by an earlier demo, if its folder is still there.
fn existing_model(home: &Home) -> Result<Option<crate::ModelEntry>, ApiError> {
    Ok(models::list(home)?.into_iter().find(|m| {
        matches!(&m.source, ModelSource::Scratch { project, size, .. }
            if project == PROJECT_NAME && size == ScratchSize::Tiny.label())
            && Path::new(&m.path).join("config.json").is_file()
    }))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The unigram entropy (nats) of the trained-on tokens of the validation split, and their count.
fn unigram_entropy(dataset_dir: &Path) -> Result<(f64, u64), ApiError> {
    let mut val = DatasetDir::at(dataset_dir).index(Split::Val)?;
    let mut counts: HashMap<u32, u64> = HashMap::new();
    for i in 0..val.len() {
        let r = val.read(i)?;
        // Position k predicts token k+1: the targets are the tokens after the first whose mask
        // is set, as the loss counts them.
        for k in 1..r.ids.len() {
            if r.mask.get(k).copied().unwrap_or(0) != 0 {
                *counts.entry(r.ids[k]).or_default() += 1;
            }
        }
    }
    let n: u64 = counts.values().sum();
    let h = counts
        .values()
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.ln()
        })
        .sum();
    Ok((h, n))
}

/// Runs the demo in `home`. `on_run` receives the run folder as soon as it exists (the window
/// opens it in the Train view).
pub fn run(
    home: &Home,
    opts: &DemoOptions,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
    on_run: &mut dyn FnMut(&Path),
) -> Result<DemoReport, ApiError> {
    let started = std::time::Instant::now();
    let mut reused = Vec::new();
    let check = || {
        if cancel.is_cancelled() {
            Err(ApiError::new(doctune_core::Code::Cancelled, "cancelled"))
        } else {
            Ok(())
        }
    };

    let (project_dir, had_project) = project(home)?;
    if had_project {
        reused.push("project".to_string());
    }
    stage(sink, 0, project_dir.display().to_string());

    let paths = write_documents(home)?;
    stage(
        sink,
        1,
        format!("adding and extracting {} files", paths.len()),
    );
    let added = ingest::add_and_ingest(
        &project_dir,
        &paths,
        &crate::Limits::default(),
        &ingest::IngestLimits::default(),
        sink,
        cancel,
    )?;
    if added.added.added.is_empty() {
        reused.push("documents".to_string());
    }
    if let Some(bad) = added.ingested.records.iter().find(|f| f.error.is_some()) {
        return Err(ApiError::invalid(format!(
            "the demo document {} did not extract: {}",
            bad.path,
            bad.error.clone().unwrap_or_default()
        )));
    }
    check()?;

    let model = match existing_model(home)? {
        Some(m) => {
            reused.push("model".to_string());
            m
        }
        None => {
            stage(
                sink,
                2,
                "training a tokenizer and creating a tiny model".into(),
            );
            scratch::create_model(home, &project_dir, &ScratchRequest::default(), sink, cancel)?
        }
    };
    let model_dir = PathBuf::from(&model.path);
    check()?;

    let ds_opts = dataset_options(Some(SEQ_LEN));
    let existing_ds = dataset::list(&project_dir)?
        .into_iter()
        .find(|d| same_dir(Path::new(&d.meta.model), &model_dir) && d.meta.options == ds_opts);
    let ds = match existing_ds {
        Some(d) => {
            reused.push("dataset".to_string());
            d
        }
        None => {
            stage(sink, 3, format!("windows of {SEQ_LEN} tokens"));
            dataset::build(
                home,
                &project_dir,
                &dataset::DatasetRequest {
                    model: model.id.clone(),
                    inputs: Vec::new(),
                    options: ds_opts,
                },
                sink,
                cancel,
            )?
        }
    };
    let ds_dir = PathBuf::from(&ds.path);
    check()?;

    // The run: a finished one of these settings, an unfinished one (resumed), or a new one.
    let overrides = RunOverrides {
        max_steps: Some(opts.steps),
        micro_batch: Some(MICRO_BATCH),
        ..RunOverrides::default()
    };
    let mut config = scratch::settings(&ds_dir, &overrides)?;
    config.base_model = model_dir.clone();
    config.checkpoint_every = 50;
    let matching = |r: &RunInfo| {
        same_dir(&r.config.base_model, &model_dir)
            && same_dir(&r.config.dataset, &ds_dir)
            && same_settings(&r.config, &config)
    };
    let runs = train::list(&project_dir)?;
    let run_dir = match runs.iter().find(|r| matching(r)) {
        Some(r) if r.steps >= opts.steps => {
            reused.push("training".to_string());
            on_run(Path::new(&r.path));
            PathBuf::from(&r.path)
        }
        Some(r) => {
            stage(sink, 4, format!("resuming {} at step {}", r.id, r.steps));
            on_run(Path::new(&r.path));
            train::resume(Path::new(&r.path), sink, cancel)?.run_dir
        }
        None => {
            stage(sink, 4, format!("{} steps on the CPU", opts.steps));
            train::start(home, &project_dir, config, sink, cancel, on_run)?.run_dir
        }
    };
    check()?;
    let run_id = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let steps = train::history(&run_dir)?
        .last()
        .map(|m| m.step)
        .unwrap_or_default();
    if steps < opts.steps {
        return Err(ApiError::new(
            doctune_core::Code::Cancelled,
            format!("the demo's run stopped at step {steps} of {}", opts.steps),
        ));
    }

    let exports = export::list(&project_dir)?;
    let find = |format: Format| -> Option<ExportInfo> {
        exports
            .iter()
            .find(|e| e.run_id == run_id && e.step == steps && e.format == format)
            .cloned()
    };
    let mut export_one =
        |format: Format, dtype: Dtype| -> Result<(PathBuf, Vec<String>), ApiError> {
            if let Some(e) = find(format) {
                reused.push(format!("export ({})", format.label()));
                let files = e.files.into_iter().map(|f| f.path).collect();
                return Ok((PathBuf::from(e.path), files));
            }
            stage(sink, 5, format.label().to_string());
            let options = ExportOptions {
                format,
                // A model this small loses more to 4-bit blocks than a large one; 8-bit keeps it.
                quant: Quant::Q8_0,
                dtype,
                checkpoint: None,
                system: None,
                overwrite: false,
            };
            let r = export::export(home, &run_dir, &options, None, sink, cancel)?;
            Ok((r.dir, r.files.into_iter().map(|f| f.path).collect()))
        };
    let (ollama_dir, ollama_files) = export_one(Format::Ollama, Dtype::default())?;
    let (merged_dir, _) = export_one(Format::Merged, Dtype::F32)?;
    check()?;
    let gguf = ollama_files
        .iter()
        .find(|f| f.ends_with(".gguf"))
        .map(|f| ollama_dir.join(f))
        .ok_or_else(|| ApiError::invalid("the Ollama export holds no GGUF file"))?;
    let modelfile = ollama_dir.join(doctune_export::ollama::MODELFILE);

    stage(sink, 6, "validation loss and baselines".into());
    let max_val = RunConfig::default().eval_max_examples;
    let val_loss = doctune_train::evaluate(&merged_dir, &ds_dir, max_val)?;
    let untrained = doctune_train::evaluate(&model_dir, &ds_dir, max_val)?;
    let (Some(val_loss), Some(untrained_loss)) = (val_loss, untrained) else {
        return Err(ApiError::invalid(format!(
            "{}: the validation split holds no token to measure",
            ds_dir.display()
        )));
    };
    let (unigram, val_tokens) = unigram_entropy(&ds_dir)?;

    stage(sink, 7, format!("continuing {:?}", opts.prompt));
    let sample = crate::generate::generate(
        home,
        &ModelCache::default(),
        &GenerateRequest {
            model: merged_dir.display().to_string(),
            adapter: None,
            prompt: opts.prompt.clone(),
            chat: false,
            system: None,
            max_new_tokens: opts.sample_tokens,
            sampling: crate::generate::Sampling {
                repetition_penalty: 1.3,
                ..Default::default()
            },
            device: None,
        },
        &doctune_core::NullSink,
        cancel,
    )?;
    Ok(DemoReport {
        project_dir: project_dir.display().to_string(),
        documents: DOCUMENTS.len(),
        model_id: model.id,
        model_dir: model.path,
        parameters: model.parameters,
        vocab_size: doctune_models::ModelConfig::load(&model_dir)?.vocab_size,
        dataset_dir: ds.path,
        train_tokens: ds.meta.stats.train_tokens,
        val_tokens,
        run_dir: run_dir.display().to_string(),
        steps,
        val_loss,
        unigram_entropy: unigram,
        untrained_loss,
        export_dir: ollama_dir.display().to_string(),
        gguf: gguf.display().to_string(),
        modelfile: modelfile.display().to_string(),
        merged_dir: merged_dir.display().to_string(),
        ollama_create: format!("ollama create {OLLAMA_NAME} -f {}", modelfile.display()),
        prompt: opts.prompt.clone(),
        sample: sample.text,
        reused,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Whether an earlier run used the settings the demo asks for now (paths aside).
fn same_settings(a: &RunConfig, b: &RunConfig) -> bool {
    let strip = |c: &RunConfig| RunConfig {
        base_model: PathBuf::new(),
        dataset: PathBuf::new(),
        ..c.clone()
    };
    strip(a) == strip(b)
}
