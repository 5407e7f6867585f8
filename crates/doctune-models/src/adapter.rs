//! PEFT LoRA adapters on disk: `adapter_config.json` + `adapter_model.safetensors`, the layout
//! `peft`'s `save_pretrained` writes and `PeftModel.from_pretrained` reads. DocTune loads
//! adapters PEFT trained and writes adapters PEFT loads.
//!
//! Supported: plain LoRA (`peft_type` LORA) with one rank and alpha, rsLoRA, dropout, any subset
//! of the projections [`crate::Target`] names, no bias training. Refused with a named reason: DoRA,
//! per-module rank/alpha patterns, `modules_to_save`, trained biases, `fan_in_fan_out`.

use crate::linear::LoraSpec;
use crate::model::CausalLm;
use crate::ModelError;
use candle_core::{DType, Tensor};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// The adapter files' names.
pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// What an adapter folder says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    pub spec: LoraSpec,
    /// Module names (`q_proj`, `qkv_proj`, …) as `target_modules` lists them.
    pub target_modules: Vec<String>,
    pub base_model: Option<String>,
}

fn bad(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Adapter {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads and checks `adapter_config.json`.
pub fn read_adapter_config(dir: &Path) -> Result<AdapterInfo, ModelError> {
    let path = dir.join(CONFIG_FILE);
    let cfg = doctune_tokenizer::read_json(&path)
        .map_err(|e| bad(&path, e.to_string()))?
        .ok_or_else(|| {
            bad(
                &path,
                "not found: an adapter folder needs adapter_config.json",
            )
        })?;
    let s = |k: &str| cfg.get(k).and_then(Value::as_str);
    if let Some(t) = s("peft_type").filter(|t| *t != "LORA") {
        return Err(bad(
            &path,
            format!("is a {t} adapter; DocTune reads LoRA adapters"),
        ));
    }
    if cfg.get("use_dora").and_then(Value::as_bool) == Some(true) {
        return Err(bad(&path, "uses DoRA, which DocTune does not support"));
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if cfg
            .get(key)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(bad(
                &path,
                format!("sets `{key}` (per-module ranks), which DocTune does not support"),
            ));
        }
    }
    if cfg
        .get("modules_to_save")
        .is_some_and(|m| !m.is_null() && m.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(bad(
            &path,
            "sets `modules_to_save` (fully trained extra modules), which DocTune does not support",
        ));
    }
    if s("bias").is_some_and(|b| b != "none") {
        return Err(bad(
            &path,
            "trains biases (`bias` is not \"none\"), which DocTune does not support",
        ));
    }
    if cfg.get("fan_in_fan_out").and_then(Value::as_bool) == Some(true) {
        return Err(bad(
            &path,
            "sets `fan_in_fan_out` (GPT-2 style weights), which no supported family uses",
        ));
    }
    let rank = cfg
        .get("r")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0 && r <= 4096)
        .ok_or_else(|| bad(&path, "`r` is missing or not a rank between 1 and 4096"))?
        as usize;
    let alpha = cfg
        .get("lora_alpha")
        .and_then(Value::as_f64)
        .ok_or_else(|| bad(&path, "`lora_alpha` is missing"))?;
    let target_modules = match cfg.get("target_modules") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    Ok(AdapterInfo {
        spec: LoraSpec {
            rank,
            alpha,
            dropout: cfg
                .get("lora_dropout")
                .and_then(Value::as_f64)
                .unwrap_or(0.0) as f32,
            rslora: cfg
                .get("use_rslora")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        target_modules,
        base_model: s("base_model_name_or_path").map(str::to_owned),
    })
}

/// Loads a PEFT LoRA adapter from `dir` into `model` (which must have no adapter yet).
/// Returns the adapter's description.
pub fn load_adapter(model: &mut CausalLm, dir: &Path) -> Result<AdapterInfo, ModelError> {
    let info = read_adapter_config(dir)?;
    let path = dir.join(WEIGHTS_FILE);
    if !path.is_file() {
        return Err(bad(&path, "not found (an adapter saved as adapter_model.bin is a pickle, which DocTune does not read)"));
    }
    let tensors = candle_core::safetensors::load(&path, model.device())
        .map_err(|e| bad(&path, format!("cannot be read as safetensors: {e}")))?;
    // Group `…{module}.lora_A.weight` / `lora_B.weight` by module.
    let mut pairs: HashMap<String, (Option<Tensor>, Option<Tensor>)> = HashMap::new();
    for (name, t) in tensors {
        let stripped = name
            .strip_prefix("base_model.model.")
            .ok_or_else(|| bad(&path, format!("tensor `{name}` is not a PEFT LoRA tensor")))?;
        let (module, which) = if let Some(m) = stripped.strip_suffix(".lora_A.weight") {
            (m, 0)
        } else if let Some(m) = stripped.strip_suffix(".lora_B.weight") {
            (m, 1)
        } else {
            return Err(bad(
                &path,
                format!("tensor `{name}` is not a LoRA matrix (DocTune reads lora_A/lora_B only)"),
            ));
        };
        let slot = pairs.entry(module.to_owned()).or_default();
        if which == 0 {
            slot.0 = Some(t)
        } else {
            slot.1 = Some(t)
        }
    }
    if pairs.is_empty() {
        return Err(bad(&path, "holds no LoRA matrices"));
    }
    let mut modules: Vec<_> = pairs.into_iter().collect();
    modules.sort_by(|a, b| a.0.cmp(&b.0));
    for (module, (a, b)) in modules {
        let (Some(a), Some(b)) = (a, b) else {
            return Err(bad(
                &path,
                format!("`{module}` has only one of lora_A and lora_B"),
            ));
        };
        let a = a.to_dtype(DType::F32)?;
        let b = b.to_dtype(DType::F32)?;
        let found = model
            .set_lora(&module, a, b, &info.spec)
            .map_err(|e| bad(&path, e.to_string()))?;
        if !found {
            return Err(bad(&path, format!("adapts `{module}`, which this model does not have (an adapter for another base model?)")));
        }
    }
    Ok(info)
}

/// Writes the model's LoRA adapter to `dir` in PEFT's layout (each file atomically).
pub fn save_adapter(
    model: &CausalLm,
    dir: &Path,
    spec: &LoraSpec,
    base_model: &str,
) -> Result<(), ModelError> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut modules = std::collections::BTreeSet::new();
    for (name, var) in model.trainable_vars() {
        if name.contains(".lora_") {
            tensors.push((
                name,
                var.as_detached_tensor()
                    .to_dtype(DType::F32)?
                    .contiguous()?,
            ));
        }
    }
    for lin in model.linears() {
        if lin.lora.is_some() {
            modules.insert(lin.module().to_owned());
        }
    }
    if tensors.is_empty() {
        return Err(ModelError::Invalid(
            "the model has no LoRA adapter to save".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| bad(dir, e.to_string()))?;
    crate::folder::save_safetensors(&dir.join(WEIGHTS_FILE), &tensors)?;
    let modules: Vec<String> = modules.into_iter().collect();
    let config = adapter_config(spec, &modules, base_model);
    let cfg_path = dir.join(CONFIG_FILE);
    doctune_core::write_json_atomic(&cfg_path, &config)
        .map_err(|e| bad(&cfg_path, e.to_string()))?;
    Ok(())
}

/// `adapter_config.json` of a plain LoRA adapter as PEFT writes it (what
/// `PeftModel.from_pretrained` reads): rank, alpha, dropout, rsLoRA, the adapted modules
/// (`q_proj`, `qkv_proj`, …) and the base model's name or path.
pub fn adapter_config(spec: &LoraSpec, target_modules: &[String], base_model: &str) -> Value {
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "use_rslora": spec.rslora,
        "target_modules": target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "use_dora": false,
    })
}
