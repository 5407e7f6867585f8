//! What an export reads: a training run's `run.json`, its base model (refused if it changed
//! since the run started, as resume refuses), the tokenizer, and the trained weights — the
//! final PEFT adapter of a LoRA run, or the weights of any checkpoint (LoRA matrices, or every
//! weight of a full fine-tuning run).

use crate::ExportError;
use candle_core::{Device, Tensor};
use doctune_models::{LoraSpec, ModelConfig, WeightReader};
use doctune_tokenizer::ModelTokenizer;
use doctune_train::{Method, MetricsLine, RunDir, RunFile, CHECKPOINT_WEIGHTS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The LoRA matrices of a run, by the module they adapt (`model.layers.0.self_attn.q_proj`).
#[derive(Debug)]
pub struct LoraWeights {
    pub spec: LoraSpec,
    /// Module → (A [r, in], B [out, r]), f32 on the CPU.
    pub modules: BTreeMap<String, (Tensor, Tensor)>,
}

impl LoraWeights {
    /// The modules' short names (`q_proj`, `qkv_proj`), as PEFT's `target_modules` lists them.
    pub fn target_modules(&self) -> Vec<String> {
        let set: std::collections::BTreeSet<String> = self
            .modules
            .keys()
            .filter_map(|m| m.rsplit('.').next())
            .map(str::to_owned)
            .collect();
        set.into_iter().collect()
    }

    /// Bytes of the matrices in f32.
    pub fn bytes(&self) -> u64 {
        self.modules
            .values()
            .map(|(a, b)| 4 * (a.elem_count() + b.elem_count()) as u64)
            .sum()
    }

    /// Reads PEFT-named LoRA tensors (`base_model.model.{module}.lora_A.weight`) from a
    /// safetensors file.
    fn read(path: &Path, spec: LoraSpec) -> Result<Self, ExportError> {
        let bad = |message: String| ExportError::Input {
            path: path.to_path_buf(),
            message,
        };
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| bad(format!("cannot be read as safetensors: {e}")))?;
        let mut halves: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
        for (name, t) in tensors {
            let Some(rest) = name.strip_prefix("base_model.model.") else {
                continue;
            };
            let t = t.to_dtype(candle_core::DType::F32)?;
            if let Some(m) = rest.strip_suffix(".lora_A.weight") {
                halves.entry(m.to_owned()).or_default().0 = Some(t);
            } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
                halves.entry(m.to_owned()).or_default().1 = Some(t);
            }
        }
        let mut modules = BTreeMap::new();
        for (m, pair) in halves {
            match pair {
                (Some(a), Some(b)) => {
                    if a.dims().len() != 2
                        || b.dims().len() != 2
                        || a.dims()[0] != spec.rank
                        || b.dims()[1] != spec.rank
                    {
                        return Err(bad(format!(
                            "`{m}`: LoRA matrices of shapes {:?} and {:?} do not have rank {}",
                            a.dims(),
                            b.dims(),
                            spec.rank
                        )));
                    }
                    modules.insert(m, (a, b));
                }
                _ => return Err(bad(format!("`{m}` has only one of lora_A and lora_B"))),
            }
        }
        if modules.is_empty() {
            return Err(bad("holds no LoRA matrices".into()));
        }
        Ok(Self { spec, modules })
    }
}

/// The trained weights an export folds into the base model.
#[derive(Debug)]
pub enum Trained {
    Lora(LoraWeights),
    /// Every weight of a full fine-tuning checkpoint, by its Hugging Face name (f32).
    Full(WeightReader),
}

/// A run to export, loaded.
#[derive(Debug)]
pub struct Source {
    pub run_dir: PathBuf,
    pub run: RunFile,
    pub base_dir: PathBuf,
    pub config: ModelConfig,
    /// The base model's `config.json` as written.
    pub config_json: serde_json::Value,
    pub tokenizer: ModelTokenizer,
    pub trained: Trained,
    /// The optimiser step the exported weights are from.
    pub step: u64,
    /// Whether these are the run's final weights (not an earlier checkpoint's).
    pub is_final: bool,
    /// The last metrics line at or before `step` (losses for the model card).
    pub metrics: Option<MetricsLine>,
}

impl Source {
    /// Opens the run in `run_dir` at its final weights, or at checkpoint `step`.
    pub fn open(run_dir: &Path, step: Option<u64>) -> Result<Self, ExportError> {
        let dir = RunDir::at(run_dir);
        if !RunDir::is_run(run_dir) {
            return Err(ExportError::Input {
                path: run_dir.to_path_buf(),
                message: "is not a training run (no run.json)".into(),
            });
        }
        let run = dir.read()?;
        run.check_base_model(run_dir)?;
        let base_dir = run.config.base_model.clone();
        let config = ModelConfig::load(&base_dir)?;
        let config_json =
            doctune_tokenizer::read_json(&base_dir.join("config.json"))?.unwrap_or_default();
        let tokenizer = ModelTokenizer::load(&base_dir)?;
        let checkpoints = dir.checkpoints();
        let pick = |step: Option<u64>| -> Result<PathBuf, ExportError> {
            match step {
                Some(s) => dir.checkpoint(s).ok_or_else(|| {
                    let have: Vec<String> = checkpoints
                        .iter()
                        .filter_map(|c| RunDir::checkpoint_step(c))
                        .map(|s| s.to_string())
                        .collect();
                    ExportError::Invalid(format!(
                        "{}: no checkpoint of step {s} (it has {})",
                        run_dir.display(),
                        if have.is_empty() {
                            "none".to_string()
                        } else {
                            have.join(", ")
                        }
                    ))
                }),
                None => checkpoints.last().cloned().ok_or_else(|| {
                    ExportError::Invalid(format!(
                        "{}: the run has no checkpoint or adapter yet; train it first",
                        run_dir.display()
                    ))
                }),
            }
        };
        let (trained, at_step, is_final) = match (&run.config.method, step) {
            (Method::Lora { .. }, None) if dir.adapter().is_some() => {
                let adapter = dir.adapter().expect("checked");
                let info = doctune_models::read_adapter_config(&adapter)?;
                let lora = LoraWeights::read(
                    &adapter.join(doctune_models::adapter::WEIGHTS_FILE),
                    info.spec,
                )?;
                let last = dir.last_metrics()?.map_or(0, |m| m.step);
                (Trained::Lora(lora), last, true)
            }
            (
                Method::Lora {
                    rank,
                    alpha,
                    dropout,
                    rslora,
                    ..
                },
                s,
            ) => {
                let ckpt = pick(s)?;
                let spec = LoraSpec {
                    rank: *rank,
                    alpha: *alpha,
                    dropout: *dropout,
                    rslora: *rslora,
                };
                let lora = LoraWeights::read(&ckpt.join(CHECKPOINT_WEIGHTS), spec)?;
                let at = RunDir::checkpoint_step(&ckpt).unwrap_or(0);
                (Trained::Lora(lora), at, false)
            }
            (Method::Full, s) => {
                let ckpt = pick(s)?;
                let reader = WeightReader::open(&[ckpt.join(CHECKPOINT_WEIGHTS)])?;
                let at = RunDir::checkpoint_step(&ckpt).unwrap_or(0);
                let last = dir.last_metrics()?.map_or(0, |m| m.step);
                (Trained::Full(reader), at, s.is_none() || at == last)
            }
        };
        let metrics = dir.history()?.into_iter().rfind(|m| m.step <= at_step);
        Ok(Self {
            run_dir: run_dir.to_path_buf(),
            run,
            base_dir,
            config,
            config_json,
            tokenizer,
            trained,
            step: at_step,
            is_final,
            metrics,
        })
    }

    /// The LoRA weights, or why this run has none.
    pub fn lora(&self) -> Result<&LoraWeights, ExportError> {
        match &self.trained {
            Trained::Lora(l) => Ok(l),
            Trained::Full(_) => Err(ExportError::Invalid(format!(
                "{}: a full fine-tuning run has no adapter; export it merged or as GGUF",
                self.run_dir.display()
            ))),
        }
    }

    /// The tokenizer and template files of the base model that an export copies.
    pub fn tokenizer_files(&self) -> Vec<PathBuf> {
        TOKENIZER_FILES
            .iter()
            .map(|n| self.base_dir.join(n))
            .filter(|p| p.is_file())
            .collect()
    }

    pub(crate) fn tokenizer_bytes(&self) -> u64 {
        self.tokenizer_files()
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// The base model's name for people: the one given, else its folder's name.
    pub fn base_name(&self, given: Option<&str>) -> String {
        given.map(str::to_owned).unwrap_or_else(|| {
            self.base_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.base_dir.display().to_string())
        })
    }
}

/// The text-side files a model folder keeps beside its weights.
pub const TOKENIZER_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "generation_config.json",
];
