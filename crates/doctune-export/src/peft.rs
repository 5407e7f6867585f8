//! The PEFT adapter: `adapter_config.json` (written as PEFT writes it, naming the base model)
//! and `adapter_model.safetensors` with PEFT's tensor names, which
//! `peft.PeftModel.from_pretrained(base, folder)` loads unchanged. A checkpoint exports the same
//! way as the final adapter.

use crate::source::Source;
use crate::{check_cancel, io, ExportError, ExportRequest};
use doctune_core::{CancelToken, ProgressSink};
use doctune_models::adapter::{CONFIG_FILE, WEIGHTS_FILE};
use std::path::Path;

pub(crate) fn write(
    dir: &Path,
    src: &Source,
    req: &ExportRequest,
    _sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<(), ExportError> {
    let lora = src.lora()?;
    check_cancel(cancel)?;
    let mut tensors = Vec::with_capacity(2 * lora.modules.len());
    for (module, (a, b)) in &lora.modules {
        tensors.push((
            format!("base_model.model.{module}.lora_A.weight"),
            a.clone(),
        ));
        tensors.push((
            format!("base_model.model.{module}.lora_B.weight"),
            b.clone(),
        ));
    }
    doctune_models::save_safetensors(&dir.join(WEIGHTS_FILE), &tensors)?;
    let base = req
        .base_name
        .clone()
        .unwrap_or_else(|| src.base_dir.display().to_string());
    let cfg = doctune_models::adapter_config(&lora.spec, &lora.target_modules(), &base);
    let p = dir.join(CONFIG_FILE);
    doctune_core::write_json_atomic(&p, &cfg).map_err(io(&p))
}
