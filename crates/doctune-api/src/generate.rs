//! Generation with a base model (optionally with a LoRA adapter): the use case behind
//! `doctune generate` and the app's Playground.
//!
//! The prompt is encoded as transformers encodes it: plain prompts as `tokenizer(prompt)` (with
//! the special tokens the tokenizer adds, e.g. BOS), chat prompts by rendering the model's chat
//! template with the generation prompt and encoding the result without adding special tokens,
//! as `apply_chat_template(..., tokenize=True)` does. Text streams out as [`JobEvent::Text`].
//!
//! Loaded models are kept in a [`ModelCache`] (one model), so a conversation in the app does not
//! reload the weights for every reply.

pub use crate::models::resolve_model;
use crate::{models, ApiError, Home};
use doctune_core::{CancelToken, Code, JobEvent, ProgressSink};
use doctune_models::{load, load_adapter, Device, GenerateOptions, LoadOptions, LoadedModel};
pub use doctune_models::{Sampling, StopReason};
use doctune_tokenizer::Message;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The most tokens one request may generate.
pub const MAX_NEW_TOKENS: usize = 8192;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateRequest {
    /// A model of the library (its id) or a model folder.
    pub model: String,
    /// A PEFT LoRA adapter folder to apply.
    #[serde(default)]
    pub adapter: Option<String>,
    pub prompt: String,
    /// Render the prompt as a user turn with the model's chat template.
    #[serde(default)]
    pub chat: bool,
    /// A system message (chat only).
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    #[serde(default)]
    pub sampling: Sampling,
    /// `cpu` (default), `cuda` or `metal` (when DocTune was built with that feature).
    #[serde(default)]
    pub device: Option<String>,
}

/// New tokens a request generates when it does not say.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 256;

fn default_max_new_tokens() -> usize {
    DEFAULT_MAX_NEW_TOKENS
}

/// The result of a generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateResult {
    /// The generated ids (prompt excluded; a closing stop token included, as transformers'
    /// `generate` returns it).
    pub token_ids: Vec<u32>,
    pub text: String,
    pub stop_reason: StopReason,
    pub prompt_tokens: usize,
    pub tokens_per_sec: f64,
    pub model_dir: String,
}

/// The last loaded model (keyed by folder, adapter and device).
#[derive(Debug, Clone, Default)]
pub struct ModelCache(Arc<Mutex<Option<CachedModel>>>);

/// The cache key (folder, adapter, device) and the model.
type CachedModel = (String, Arc<LoadedModel>);

/// The device a request names (`cpu` when none).
pub fn device(name: Option<&str>) -> Result<Device, ApiError> {
    let open = || {
        name.unwrap_or("cpu")
            .parse::<doctune_models::DeviceKind>()?
            .open()
    };
    open().map_err(|e| ApiError::invalid(e.to_string()))
}

/// What the app's UI may ask for: a model of the library (by id, not an arbitrary folder) and an
/// adapter that is a run's or an export's inside DocTune's home
/// (`projects/<project>/runs|exports/<id>/…`), resolved through a [`Scope`] on the projects
/// folder. The request comes back with the adapter as the absolute path that was checked, so it
/// is loaded exactly as checked (not relative to the working folder). The CLI, run by the user,
/// may name any folder.
pub fn confine_to_library(
    home: &Home,
    mut req: GenerateRequest,
) -> Result<GenerateRequest, ApiError> {
    models::require_in_library(home, &req.model)?;
    if let Some(a) = &req.adapter {
        let outside = || {
            ApiError::new(
                Code::OutsideScope,
                format!("{a}: not a run's or an export's adapter folder inside DocTune's projects"),
            )
        };
        let projects = home.projects_dir();
        if !projects.is_dir() {
            return Err(outside());
        }
        let scope = doctune_core::Scope::new(&projects)?;
        // Relative adapter paths are relative to the projects folder, as the scope resolves them.
        let resolved = scope.resolve(a)?;
        let rel = resolved.strip_prefix(scope.root()).unwrap_or(&resolved);
        let parts: Vec<_> = rel.components().map(|c| c.as_os_str().to_owned()).collect();
        let area_ok = parts.len() >= 3
            && (parts[1] == doctune_core::Area::Runs.dir_name()
                || parts[1] == doctune_core::Area::Exports.dir_name());
        if !area_ok || !resolved.join("adapter_config.json").is_file() {
            return Err(outside());
        }
        req.adapter = Some(resolved.display().to_string());
    }
    Ok(req)
}

impl ModelCache {
    /// The loaded model for `dir` (+ adapter) on `device`, loading it if it is not the cached one.
    pub fn get(
        &self,
        dir: &Path,
        adapter: Option<&Path>,
        device_name: Option<&str>,
    ) -> Result<Arc<LoadedModel>, ApiError> {
        let key = format!(
            "{}|{}|{}",
            dir.display(),
            adapter.map(|a| a.display().to_string()).unwrap_or_default(),
            device_name.unwrap_or("cpu")
        );
        // A panic while a model loaded leaves the slot empty or holding a whole model, so a
        // poisoned lock is safe to take over: the next request must not fail because of it.
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, m)) = slot.as_ref() {
            if *k == key {
                return Ok(m.clone());
            }
        }
        // Free the old model before loading the new one.
        *slot = None;
        let opts = LoadOptions {
            device: device(device_name)?,
            ..Default::default()
        };
        let mut loaded = load(dir, &opts)?;
        if let Some(a) = adapter {
            load_adapter(&mut loaded.model, a)?;
        }
        let loaded = Arc::new(loaded);
        *slot = Some((key, loaded.clone()));
        Ok(loaded)
    }
}

/// The prompt's token ids, encoded as transformers encodes it (see the module docs).
pub fn encode_prompt(
    m: &LoadedModel,
    prompt: &str,
    chat: bool,
    system: Option<&str>,
) -> Result<Vec<u32>, ApiError> {
    let tok = &m.tokenizer;
    if chat {
        let template = tok.require_chat_template()?;
        let mut messages = Vec::new();
        if let Some(s) = system.filter(|s| !s.trim().is_empty()) {
            messages.push(Message::new("system", s));
        }
        messages.push(Message::new("user", prompt));
        let text = template.render(&messages, true)?;
        Ok(tok.encode(&text, false)?)
    } else {
        Ok(tok.encode(prompt, true)?)
    }
}

/// Generates for `req`, streaming text to `sink` as [`JobEvent::Text`] and ending with
/// [`JobEvent::Generated`].
pub fn generate(
    home: &Home,
    cache: &ModelCache,
    req: &GenerateRequest,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<GenerateResult, ApiError> {
    if req.max_new_tokens == 0 || req.max_new_tokens > MAX_NEW_TOKENS {
        return Err(ApiError::invalid(format!(
            "max new tokens must be between 1 and {MAX_NEW_TOKENS}"
        )));
    }
    if req.prompt.is_empty() {
        return Err(ApiError::invalid("the prompt is empty"));
    }
    req.sampling.validate()?;
    let dir = resolve_model(home, &req.model)?;
    let adapter = req.adapter.as_deref().map(PathBuf::from);
    let m = cache.get(&dir, adapter.as_deref(), req.device.as_deref())?;
    let prompt_ids = encode_prompt(&m, &req.prompt, req.chat, req.system.as_deref())?;
    let opts = GenerateOptions {
        max_new_tokens: req.max_new_tokens,
        sampling: req.sampling.clone(),
        stop_ids: m.tokenizer.stop_ids().to_vec(),
        stop_strings: m.tokenizer.stop_strings(req.chat),
    };
    let out = doctune_models::generate(
        &m.model,
        &m.tokenizer,
        &prompt_ids,
        &opts,
        cancel,
        &mut |text| {
            sink.emit(JobEvent::Text { text: text.into() });
        },
    )?;
    sink.emit(JobEvent::Generated {
        tokens: out.token_ids.len() as u64,
        stop_reason: serde_json::to_value(out.stop_reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        tokens_per_sec: out.tokens_per_sec,
    });
    if out.stop_reason == StopReason::Cancelled {
        return Err(ApiError::new(Code::Cancelled, "generation cancelled"));
    }
    Ok(GenerateResult {
        token_ids: out.token_ids,
        text: out.text,
        stop_reason: out.stop_reason,
        prompt_tokens: out.prompt_tokens,
        tokens_per_sec: out.tokens_per_sec,
        model_dir: dir.display().to_string(),
    })
}
