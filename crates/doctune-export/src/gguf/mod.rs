//! GGUF, written by DocTune: the merged model ([`write_model`]) or the adapter alone as a GGUF
//! LoRA ([`write_lora`]).
//!
//! - [`file`]: the container (v3, streamed one tensor at a time);
//! - [`arch`]: llama.cpp's names, keys and weight layout for each family;
//! - [`vocab`]: the tokenizer metadata;
//! - [`quant`]: quantisation types, llama.cpp's mix rules, the encoders.
//!
//! 1-D tensors and norms stay F32; every other weight gets the type [`quant::tensor_type`]
//! picks, and a tensor whose rows do not divide into the type's blocks falls back as llama.cpp
//! falls back — each fallback is listed in the report and the manifest.
//!
//! [`write_model`] runs as a three-stage pipeline (read and merge, quantise, hash and write), a
//! tensor in each stage, so a few tensors are in memory at once whatever the model's size.

pub mod arch;
pub mod file;
pub mod quant;
pub mod vocab;

use crate::manifest::{FileHash, HashedFile};
use crate::source::Source;
use crate::{check_cancel, io, ExportError, Fallback};
use arch::{Arch, Extra};
use doctune_core::{CancelToken, JobEvent, ProgressSink};
use file::{GgmlType, GgufWriter, TensorInfo, Value};
use quant::{Quant, Role};
use std::path::Path;
use std::sync::mpsc::sync_channel;

/// Where a planned tensor's values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorSource {
    /// A weight of the merged model, by its Hugging Face name.
    Weight(String),
    /// A computed tensor (rope factors).
    Extra(Vec<f32>),
}

/// One tensor of a planned GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub info: TensorInfo,
    pub source: TensorSource,
    /// Elements per row (`dims[0]`).
    pub cols: usize,
}

/// A GGUF file, planned before it is written.
#[derive(Debug, Clone)]
pub struct ModelPlan {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<Planned>,
    /// The file's size.
    pub bytes: u64,
    pub warnings: Vec<String>,
    pub fallbacks: Vec<Fallback>,
}

/// What a GGUF export reports.
#[derive(Debug, Clone, Default)]
pub struct GgufOutput {
    pub warnings: Vec<String>,
    pub fallbacks: Vec<Fallback>,
    /// The file's hash, taken as it was written.
    pub hash: Option<FileHash>,
}

fn general(src: &Source, arch: &Arch, kind: &str, quant: Quant) -> Vec<(String, Value)> {
    vec![
        ("general.architecture".into(), Value::Str(arch.name.into())),
        ("general.type".into(), Value::Str(kind.into())),
        // The base model's name goes under general.base_model, not general.name: llama.cpp keys
        // vocabulary workarounds on general.name (a name with "phi3" makes it look up Phi-3's
        // `<|end|>`, refusing a from-scratch or fixture vocabulary without one).
        (
            "general.name".into(),
            Value::Str(format!("DocTune {}", src.run.id)),
        ),
        ("general.base_model.count".into(), Value::U32(1)),
        (
            "general.base_model.0.name".into(),
            Value::Str(src.base_name(None)),
        ),
        ("general.file_type".into(), Value::U32(quant.file_type())),
        ("general.quantization_version".into(), Value::U32(2)),
    ]
}

fn role(gguf: &str, tied: bool) -> Role {
    if gguf == "token_embd.weight" {
        Role::TokenEmbd { tied }
    } else if gguf == "output.weight" {
        Role::Output
    } else if gguf.ends_with(".attn_v.weight") || gguf.ends_with(".attn_qkv.weight") {
        Role::AttnV
    } else if gguf.ends_with(".ffn_down.weight") {
        Role::FfnDown
    } else {
        Role::Other
    }
}

/// The plan of the merged model's GGUF file in `quant`.
pub fn plan_model(src: &Source, quant: Quant) -> Result<ModelPlan, ExportError> {
    let cfg = &src.config;
    let arch = Arch::of(cfg);
    let weights = src.weights()?;
    let (hp, extras, mut warnings) = arch::hparams(cfg, &src.config_json, &arch)?;
    let vocab = vocab::Vocab::read(&src.base_dir, &src.tokenizer, cfg.vocab_size)?;
    warnings.extend(vocab.notes.iter().cloned());
    let mut metadata = general(src, &arch, "model", quant);
    metadata.extend(hp);
    metadata.extend(vocab.metadata());

    let mut tensors = Vec::new();
    let mut fallbacks = Vec::new();
    for Extra { name, data } in extras {
        tensors.push(Planned {
            info: TensorInfo {
                name,
                dims: vec![data.len() as u64],
                ty: GgmlType::F32,
            },
            cols: data.len(),
            source: TensorSource::Extra(data),
        });
    }
    let tied = cfg.tie_word_embeddings;
    for hf in weights.names() {
        let Some(g) = arch::tensor_name(hf, cfg.family) else {
            continue;
        };
        let shape = weights.shape(hf)?;
        let cols = *shape.last().unwrap_or(&1);
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let ty = if shape.len() < 2 || g.ends_with("_norm.weight") {
            GgmlType::F32
        } else {
            let layer = arch::layer_of(&g).unwrap_or(0);
            let (ty, why) =
                quant::tensor_type(quant, role(&g, tied), layer, cfg.num_layers, cols as u64);
            if let Some(reason) = why {
                fallbacks.push(Fallback {
                    tensor: g.clone(),
                    wanted: quant.base_type(),
                    used: ty,
                    reason,
                });
            }
            ty
        };
        tensors.push(Planned {
            info: TensorInfo { name: g, dims, ty },
            cols,
            source: TensorSource::Weight(hf.clone()),
        });
    }
    if !fallbacks.is_empty() {
        warnings.push(format!(
            "{} tensor(s) stored in another type than {} because their rows do not divide into its blocks (listed in manifest.json)",
            fallbacks.len(),
            quant.label()
        ));
    }
    let infos: Vec<TensorInfo> = tensors.iter().map(|t| t.info.clone()).collect();
    Ok(ModelPlan {
        bytes: file::file_size(&metadata, &infos),
        metadata,
        tensors,
        warnings,
        fallbacks,
    })
}

/// Writes the merged model of `src` as a GGUF file at `path`, as [`plan_model`] planned it.
pub fn write_model(
    path: &Path,
    src: &Source,
    plan: ModelPlan,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<GgufOutput, ExportError> {
    let weights = src.weights()?;
    let arch = Arch::of(&src.config);
    let infos: Vec<TensorInfo> = plan.tensors.iter().map(|t| t.info.clone()).collect();
    let w =
        GgufWriter::start(HashedFile::create(path)?, &plan.metadata, infos).map_err(io(path))?;
    let total = plan.tensors.len() as u64;
    // Three stages overlap: a thread reads, merges and lays out the next tensor's values, this
    // one quantises the current one, and a thread hashes and writes the one before. Each
    // channel holds one tensor, so a handful are in memory at once, whatever the model's size.
    let hash = std::thread::scope(|scope| -> Result<FileHash, ExportError> {
        let (values_tx, values_rx) = sync_channel::<Result<Vec<f32>, ExportError>>(1);
        let (weights, arch, tensors) = (&weights, &arch, &plan.tensors);
        scope.spawn(move || {
            for t in tensors {
                let data = match &t.source {
                    TensorSource::Extra(d) => Ok(d.clone()),
                    TensorSource::Weight(hf) => weights.values(hf).map(|mut d| {
                        arch::transform(arch, &src.config, hf, &mut d, t.cols);
                        d
                    }),
                };
                let failed = data.is_err();
                // The receiver hangs up when it stops early (an error, a cancel).
                if values_tx.send(data).is_err() || failed || cancel.is_cancelled() {
                    return;
                }
            }
        });
        let (bytes_tx, bytes_rx) = sync_channel::<Vec<u8>>(1);
        let writer = scope.spawn(move || -> Result<FileHash, ExportError> {
            let mut w = w;
            for bytes in bytes_rx {
                w.tensor(&bytes).map_err(io(path))?;
            }
            w.finish().map_err(io(path))?.finish()
        });
        let encoded = (|| -> Result<(), ExportError> {
            for (i, t) in plan.tensors.iter().enumerate() {
                check_cancel(cancel)?;
                let data = values_rx.recv().map_err(|_| ExportError::Cancelled)??;
                let bytes = quant::encode(&data, t.cols, t.info.ty)?;
                drop(data);
                if bytes_tx.send(bytes).is_err() {
                    // The writer failed: its error is the one to report.
                    break;
                }
                sink.emit(JobEvent::progress(
                    i as u64 + 1,
                    total,
                    "tensors",
                    Some(t.info.name.clone()),
                ));
            }
            Ok(())
        })();
        drop((bytes_tx, values_rx));
        let written = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        encoded?;
        written
    })?;
    Ok(GgufOutput {
        warnings: plan.warnings,
        fallbacks: plan.fallbacks,
        hash: Some(hash),
    })
}

/// Writes the run's LoRA adapter as a GGUF LoRA at `path` (tensors `<weight>.lora_a` [r, in]
/// and `<weight>.lora_b` [out, r], `adapter.lora.alpha` such that llama.cpp's `alpha / rank`
/// is the adapter's scale, `lora_b` rows permuted as the base weight's are).
pub fn write_lora(
    path: &Path,
    src: &Source,
    quant: Quant,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<GgufOutput, ExportError> {
    let lora = src.lora()?;
    let cfg = &src.config;
    let arch = Arch::of(cfg);
    if !crate::Format::GgufLora.quants().contains(&quant) {
        return Err(ExportError::Invalid(format!(
            "a GGUF LoRA adapter is written in f16, q8_0, bf16 or f32, not {}",
            quant.label()
        )));
    }
    let base_ty = quant.base_type();
    let mut metadata = general(src, &arch, "adapter", quant);
    metadata.push(("adapter.type".into(), Value::Str("lora".into())));
    // llama.cpp scales by alpha / rank; rsLoRA's alpha / √rank is written as such an alpha.
    let alpha = lora.spec.scale() * lora.spec.rank as f64;
    metadata.push(("adapter.lora.alpha".into(), Value::F32(alpha as f32)));
    let mut planned: Vec<(TensorInfo, Vec<f32>, usize)> = Vec::new();
    let mut out = GgufOutput::default();
    let mut modules: Vec<(&String, &(candle_core::Tensor, candle_core::Tensor))> =
        lora.modules.iter().collect();
    modules.sort_by_key(|(m, _)| {
        let layer = m
            .strip_prefix("model.layers.")
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        (layer, (*m).clone())
    });
    for (module, (a, b)) in modules {
        check_cancel(cancel)?;
        let hf = format!("{module}.weight");
        let g = arch::tensor_name(&hf, cfg.family)
            .ok_or_else(|| ExportError::Unsupported(format!("`{module}` has no GGUF name")))?;
        let (r, inp) = a.dims2()?;
        let (out_rows, _) = b.dims2()?;
        let a_data: Vec<f32> = a.flatten_all()?.to_vec1()?;
        let mut b_data: Vec<f32> = b.flatten_all()?.to_vec1()?;
        // The base weight's transform applies to B's rows (A's columns are the input's).
        arch::transform(&arch, cfg, &hf, &mut b_data, r);
        for (suffix, data, dims, cols) in [
            ("lora_a", a_data, vec![inp as u64, r as u64], inp),
            ("lora_b", b_data, vec![r as u64, out_rows as u64], r),
        ] {
            let name = format!("{g}.{suffix}");
            let ty = if base_ty.fits_row(cols as u64) {
                base_ty
            } else {
                out.fallbacks.push(Fallback {
                    tensor: name.clone(),
                    wanted: base_ty,
                    used: GgmlType::F16,
                    reason: format!(
                        "rows of {cols} do not divide into {}-element blocks",
                        base_ty.block_elems()
                    ),
                });
                GgmlType::F16
            };
            planned.push((TensorInfo { name, dims, ty }, data, cols));
        }
    }
    let infos: Vec<TensorInfo> = planned.iter().map(|p| p.0.clone()).collect();
    let mut w = GgufWriter::start(HashedFile::create(path)?, &metadata, infos).map_err(io(path))?;
    let total = planned.len() as u64;
    for (i, (info, data, cols)) in planned.iter().enumerate() {
        check_cancel(cancel)?;
        w.tensor(&quant::encode(data, *cols, info.ty)?)
            .map_err(io(path))?;
        sink.emit(JobEvent::progress(
            i as u64 + 1,
            total,
            "tensors",
            Some(info.name.clone()),
        ));
    }
    out.hash = Some(w.finish().map_err(io(path))?.finish()?);
    if arch.name != "llama" && arch.name != "gemma2" {
        out.warnings.push(format!("Ollama applies safetensors adapters only to Llama and Gemma 2 bases; use this GGUF adapter (`ADAPTER`) with a GGUF of the {} base", cfg.family.label()));
    }
    Ok(out)
}
