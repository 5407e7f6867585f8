//! A job bundle: the same training job, handed to the trainers people run on clusters. DocTune
//! does not schedule clusters; it writes a self-contained folder that transformers' `Trainer`
//! (`train.py`, under `torchrun` or `accelerate launch`) and Axolotl (`axolotl.yaml`) run
//! unchanged, and `doctune runs import` brings back what they produce.
//!
//! The folder (`BUNDLE_FILES` names the fixed ones):
//!
//! - `data/train.jsonl`, `data/val.jsonl` — pre-tokenised examples (`input_ids`,
//!   `attention_mask`, `labels` with `-100` where DocTune's mask takes no loss), tokenised exactly
//!   as DocTune's dataset; `data/train.text.jsonl`, `data/val.text.jsonl` — the same examples as
//!   rendered text with the trained-on spans (character offsets), for people and other tools;
//!   `data/order.json` — the example indices in the order DocTune's trainer visits them (its
//!   seeded shuffle per epoch, steps × micro-batch × accumulation of them); `data/meta.json` —
//!   the dataset's `meta.json`.
//! - `bundle.json` — the settings `train.py` reads (and the whole `RunConfig`, for the import).
//! - `train.py`, `axolotl.yaml`, `README.md` (the commands), `DATA.md` (the model card's data
//!   section), optionally `initial_adapter/` (DocTune's seeded LoRA initialisation, so the
//!   bundle's run starts where `doctune train` would), and `manifest.json` (sha256 of every
//!   file).
//!
//! The bundle is built in a staged folder and renamed into place when complete.

mod axolotl;

use crate::manifest::{list_files, ExportedFile, MANIFEST};
use crate::{io, ExportError};
use doctune_core::{CancelToken, JobEvent, ProgressSink, StagedDir};
use doctune_dataset::{DatasetDir, Record, Split};
use doctune_models::{ModelConfig, Target};
use doctune_train::RunConfig;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `bundle.json`'s schema version.
pub const BUNDLE_SCHEMA: u32 = 1;
/// The bundle's settings file.
pub const BUNDLE_FILE: &str = "bundle.json";
/// The Hugging Face script.
pub const TRAIN_PY: &str = "train.py";
/// The folder of DocTune's initial adapter, when the bundle has one.
pub const INITIAL_ADAPTER: &str = "initial_adapter";

const TRAIN_SCRIPT: &str = include_str!("train.py");

/// The base model as the bundle names it: the folder it was loaded from here, and the Hub
/// repository it came from when it did (what a cluster downloads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct BaseModelRef {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub_repo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The library's name for it.
    pub name: String,
}

impl BaseModelRef {
    /// What another machine loads: the Hub repository when there is one, else the folder.
    pub fn reference(&self) -> &str {
        self.hub_repo.as_deref().unwrap_or(&self.path)
    }
}

/// What to bundle.
#[derive(Debug, Clone)]
pub struct BundleRequest {
    /// The run's settings (`base_model` and `dataset` are folders).
    pub config: RunConfig,
    pub base: BaseModelRef,
    /// The folder to create.
    pub out: PathBuf,
    /// Write DocTune's seeded LoRA initialisation as `initial_adapter/` (loads the base model
    /// once to make it).
    pub initial_adapter: bool,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleReport {
    pub dir: String,
    pub id: String,
    /// Optimiser steps of DocTune's run (one process of the bundle's `train.py` makes as many).
    pub steps: u64,
    pub train_examples: usize,
    pub val_examples: usize,
    pub files: Vec<ExportedFile>,
}

/// The Hugging Face module names LoRA `targets` select in a model of `model_type` (Phi-3 fuses
/// q/k/v and gate/up into one matrix each, as PEFT's Phi-3 targets do).
pub fn hf_target_modules(targets: &[Target], model_type: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in targets {
        let name = match (model_type, t) {
            ("phi3", Target::Q | Target::K | Target::V) => "qkv_proj".to_string(),
            ("phi3", Target::Gate | Target::Up) => "gate_up_proj".to_string(),
            _ => format!("{}_proj", t.name()),
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// The examples of `split`, each as (`input_ids`/`attention_mask`/`labels`, text and spans).
fn write_split(
    ds: &DatasetDir,
    split: Split,
    tokens: &Path,
    text: &Path,
    cancel: &CancelToken,
) -> Result<usize, ExportError> {
    let mut tok = std::io::BufWriter::new(std::fs::File::create(tokens).map_err(io(tokens))?);
    let mut txt = std::io::BufWriter::new(std::fs::File::create(text).map_err(io(text))?);
    let mut n = 0;
    for r in ds
        .read_split(split)
        .map_err(|e| ExportError::Invalid(e.to_string()))?
    {
        if cancel.is_cancelled() {
            return Err(ExportError::Cancelled);
        }
        let r: Record = r.map_err(|e| ExportError::Invalid(e.to_string()))?;
        let labels: Vec<i64> = r
            .ids
            .iter()
            .zip(&r.mask)
            .map(|(&id, &m)| if m == 1 { i64::from(id) } else { -100 })
            .collect();
        let row = json!({
            "input_ids": r.ids,
            "attention_mask": vec![1u8; r.ids.len()],
            "labels": labels,
        });
        writeln!(tok, "{row}").map_err(io(tokens))?;
        writeln!(txt, "{}", json!({"text": r.text, "spans": r.spans})).map_err(io(text))?;
        n += 1;
    }
    for (w, p) in [(tok, tokens), (txt, text)] {
        w.into_inner().map_err(|e| ExportError::Io {
            path: p.to_path_buf(),
            source: e.into_error(),
        })?;
    }
    Ok(n)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::write(path, bytes).map_err(io(path))
}

/// Writes the bundle `req` asks for (see the module docs).
pub fn write_bundle(
    req: &BundleRequest,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<BundleReport, ExportError> {
    let cfg = &req.config;
    cfg.validate()
        .map_err(|e| ExportError::Invalid(e.to_string()))?;
    let lora = cfg.method.lora();
    let (parent, name) = match (req.out.parent(), req.out.file_name()) {
        (Some(p), Some(n)) => (
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            },
            n.to_string_lossy().into_owned(),
        ),
        _ => {
            return Err(ExportError::Invalid(format!(
                "{}: not a folder to create",
                req.out.display()
            )))
        }
    };
    if req.out.symlink_metadata().is_ok() {
        return Err(ExportError::Exists {
            path: req.out.clone(),
        });
    }
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let ds = DatasetDir::open(&cfg.dataset).map_err(|e| ExportError::Invalid(e.to_string()))?;
    let meta = ds
        .read_meta()
        .map_err(|e| ExportError::Invalid(e.to_string()))?;
    // The base model must read (its config) before anything is written.
    ModelConfig::load(&cfg.base_model)?;
    let model_type: String = std::fs::read(cfg.base_model.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["model_type"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let staged = StagedDir::new_in(parent, &name).map_err(io(parent))?;
    let root = staged.path().to_path_buf();
    let data = root.join("data");
    std::fs::create_dir_all(&data).map_err(io(&data))?;

    sink.emit(JobEvent::progress(0, 3, "stages", Some("examples".into())));
    let n_train = write_split(
        &ds,
        Split::Train,
        &data.join("train.jsonl"),
        &data.join("train.text.jsonl"),
        cancel,
    )?;
    let n_val = write_split(
        &ds,
        Split::Val,
        &data.join("val.jsonl"),
        &data.join("val.text.jsonl"),
        cancel,
    )?;
    if n_train == 0 {
        return Err(ExportError::Invalid(format!(
            "{}: the dataset has no training example",
            cfg.dataset.display()
        )));
    }
    let steps = cfg.total_steps(n_train);
    let needed = steps as usize * cfg.micro_batch * cfg.grad_accum;
    let order: Vec<usize> = (0..needed.div_ceil(n_train) as u64)
        .flat_map(|e| doctune_train::epoch_order(n_train, cfg.seed, e))
        .take(needed)
        .collect();
    write(
        &data.join("order.json"),
        serde_json::to_string(&order)
            .map_err(|e| ExportError::Invalid(e.to_string()))?
            .as_bytes(),
    )?;
    let meta_src = ds.meta_path();
    std::fs::copy(&meta_src, data.join("meta.json")).map_err(io(&meta_src))?;

    let created = doctune_core::now_rfc3339();
    let digest = Sha256::digest(format!("{}{cfg:?}{created}", meta.id).as_bytes());
    let id = format!("bundle-{}", &hex::encode(digest)[..12]);
    let targets = lora
        .as_ref()
        .map(|(_, t)| hf_target_modules(t, &model_type))
        .unwrap_or_default();
    let settings = json!({
        "schema": BUNDLE_SCHEMA,
        "bundleId": id,
        "createdAt": created,
        "doctuneVersion": env!("CARGO_PKG_VERSION"),
        "baseModel": req.base,
        "dataset": meta.id,
        "seqLen": meta.options.seq_len,
        "steps": steps,
        "epochs": cfg.epochs,
        "maxSteps": cfg.max_steps,
        "microBatch": cfg.micro_batch,
        "gradAccum": cfg.grad_accum,
        "lr": cfg.lr,
        "schedule": cfg.schedule,
        "warmupSteps": cfg.warmup_steps,
        "weightDecay": cfg.weight_decay,
        "maxGradNorm": cfg.max_grad_norm,
        "evalEvery": cfg.eval_every,
        "seed": cfg.seed,
        "precision": cfg.precision,
        "gradientCheckpointing": cfg.gradient_checkpointing,
        "padTokenId": 0,
        "lora": lora.as_ref().map(|(spec, _)| json!({
            "r": spec.rank, "alpha": spec.alpha, "dropout": spec.dropout, "rslora": spec.rslora,
            "targetModules": targets,
        })),
        "config": cfg,
    });
    write(
        &root.join(BUNDLE_FILE),
        serde_json::to_string_pretty(&settings)
            .map_err(|e| ExportError::Invalid(e.to_string()))?
            .as_bytes(),
    )?;
    write(&root.join(TRAIN_PY), TRAIN_SCRIPT.as_bytes())?;
    write(
        &root.join("axolotl.yaml"),
        axolotl::config(cfg, &req.base, meta.options.seq_len, &targets, n_val > 0).as_bytes(),
    )?;
    write(
        &root.join("README.md"),
        readme(&req.base, &meta.id, steps, n_train, n_val, lora.is_some()).as_bytes(),
    )?;
    write(
        &root.join("DATA.md"),
        crate::card::data_section(&cfg.dataset).as_bytes(),
    )?;

    if let (true, Some((spec, targets))) = (req.initial_adapter, &lora) {
        sink.emit(JobEvent::progress(
            1,
            3,
            "stages",
            Some("initial adapter".into()),
        ));
        let mut model = doctune_models::load_model(&cfg.base_model, &Default::default())?;
        model.add_lora(targets, spec, cfg.seed)?;
        doctune_models::save_adapter(
            &model,
            &root.join(INITIAL_ADAPTER),
            spec,
            req.base.reference(),
        )?;
    }
    sink.emit(JobEvent::progress(2, 3, "stages", Some("manifest".into())));
    let files = list_files(&root)?;
    let manifest = json!({
        "schema": BUNDLE_SCHEMA,
        "kind": "doctune-bundle",
        "bundleId": id,
        "createdAt": doctune_core::now_rfc3339(),
        "doctuneVersion": env!("CARGO_PKG_VERSION"),
        "baseModel": req.base.reference(),
        "dataset": meta.id,
        "files": files,
    });
    let mp = root.join(MANIFEST);
    doctune_core::write_json_atomic(&mp, &manifest).map_err(io(&mp))?;
    let dir = staged.commit(&name).map_err(io(&req.out))?;
    sink.emit(JobEvent::progress(3, 3, "stages", Some("done".into())));
    Ok(BundleReport {
        dir: dir.display().to_string(),
        id,
        steps,
        train_examples: n_train,
        val_examples: n_val,
        files,
    })
}

/// `README.md`: what the bundle is and the exact commands.
fn readme(
    base: &BaseModelRef,
    dataset: &str,
    steps: u64,
    n_train: usize,
    n_val: usize,
    lora: bool,
) -> String {
    let result = if lora {
        "output/adapter/"
    } else {
        "output/model/"
    };
    format!(
        r#"# DocTune job bundle

DocTune's training job for **{name}** on dataset `{dataset}` ({n_train} training and {n_val}
validation examples, {steps} optimiser steps on one process), ready for the trainers that run on
clusters. Nothing here needs DocTune.

- `train.py` — transformers `Trainer` + PEFT, the settings of `bundle.json`; writes {result},
  `output/metrics.jsonl` and `output/result.json`.
- `axolotl.yaml` — the same job for Axolotl (`axolotl train axolotl.yaml`).
- `data/` — the examples pre-tokenised (`input_ids`, `attention_mask`, `labels`, `-100` where no
  loss is taken), as rendered text with the trained spans (`*.text.jsonl`), DocTune's example
  order (`order.json`) and the dataset's `meta.json`. `DATA.md` lists the documents.
- `manifest.json` — the sha256 of every file: `python -c "import hashlib,json;[print(f['path'], hashlib.sha256(open(f['path'],'rb').read()).hexdigest()==f['sha256']) for f in json.load(open('manifest.json'))['files']]"`

The base model is `{reference}`{local}. Set `DOCTUNE_BASE_MODEL` to load it from elsewhere.

## Run it

Needs Python with `torch`, `transformers` and `peft` (`pip install torch transformers peft`).
Every command runs from this folder; `train.py` takes no arguments.

One GPU (or the CPU):

    python train.py

One node with N GPUs (DDP; each step takes N times the examples, so there are N times fewer):

    torchrun --nproc_per_node=N train.py

Several nodes (run on each node, `R` = 0 … `NODES`-1; `HOST` = node 0's address):

    torchrun --nnodes=NODES --node_rank=R --nproc_per_node=N \
        --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 train.py

Fully sharded (FSDP) for models too large for one GPU:

    accelerate launch --use_fsdp --num_processes=N \
        --fsdp_auto_wrap_policy=TRANSFORMER_BASED_WRAP --fsdp_sharding_strategy=FULL_SHARD train.py

On CPUs only, the same `torchrun` commands use the gloo backend.

With Axolotl:

    axolotl train axolotl.yaml

## Bring the result back

    doctune runs import --project "<project>" output/

registers {result} as a run of the project (checked: safetensors only, shapes against the base
model), with `output/metrics.jsonl` as its history, so DocTune's Compare and Export work on it.
"#,
        name = base.name,
        reference = base.reference(),
        local = if base.hub_repo.is_some() {
            format!(" (here: `{}`)", base.path)
        } else {
            String::new()
        },
    )
}
