//! `axolotl.yaml`: the bundle's job in Axolotl's config (its `AxolotlInputConfig` schema): the
//! same base model, sequence length, LoRA settings, learning rate and schedule, batch and
//! accumulation, steps, seed and evaluation split, on the bundle's pre-tokenised data (a
//! dataset with `input_ids`/`attention_mask`/`labels` and no `type` is used as it is).
//!
//! Written by hand: every value is a number, a boolean or a JSON string (YAML reads JSON's
//! double-quoted strings), so no YAML library is needed.

use super::BaseModelRef;
use doctune_models::Precision;
use doctune_train::optim::Schedule;
use doctune_train::RunConfig;
use std::fmt::Write;

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The config for `cfg` on data of `seq_len` tokens.
pub(super) fn config(
    cfg: &RunConfig,
    base: &BaseModelRef,
    seq_len: usize,
    target_modules: &[String],
    has_val: bool,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# DocTune job bundle for Axolotl: `axolotl train axolotl.yaml` from this folder."
    );
    let _ = writeln!(
        s,
        "# The same settings as bundle.json (DocTune's run); the data is pre-tokenised by DocTune."
    );
    let _ = writeln!(s, "base_model: {}", q(base.reference()));
    if let Some(r) = &base.revision {
        let _ = writeln!(s, "revision_of_model: {}", q(r));
    }
    let _ = writeln!(
        s,
        "datasets:\n  - path: data/train.jsonl\n    ds_type: json\n    split: train"
    );
    if has_val {
        let _ = writeln!(
            s,
            "test_datasets:\n  - path: data/val.jsonl\n    ds_type: json\n    split: train"
        );
    } else {
        let _ = writeln!(s, "val_set_size: 0.0");
    }
    let _ = writeln!(s, "dataset_prepared_path: last_run_prepared");
    let _ = writeln!(s, "output_dir: ./output/axolotl");
    let _ = writeln!(s, "sequence_len: {seq_len}");
    let _ = writeln!(s, "sample_packing: false");
    let _ = writeln!(s, "pad_to_sequence_len: false");
    if let Some((spec, _)) = cfg.method.lora() {
        let _ = writeln!(s, "adapter: lora");
        let _ = writeln!(s, "lora_r: {}", spec.rank);
        let _ = writeln!(s, "lora_alpha: {}", spec.alpha);
        let _ = writeln!(s, "lora_dropout: {}", spec.dropout);
        let modules: Vec<String> = target_modules.iter().map(|m| q(m)).collect();
        let _ = writeln!(s, "lora_target_modules: [{}]", modules.join(", "));
        let _ = writeln!(s, "peft_use_rslora: {}", spec.rslora);
    }
    let _ = writeln!(s, "micro_batch_size: {}", cfg.micro_batch);
    let _ = writeln!(s, "gradient_accumulation_steps: {}", cfg.grad_accum);
    match cfg.max_steps {
        Some(n) => {
            let _ = writeln!(s, "max_steps: {n}");
        }
        None => {
            let _ = writeln!(s, "num_epochs: {}", cfg.epochs);
        }
    }
    let _ = writeln!(s, "optimizer: adamw_torch");
    let _ = writeln!(s, "learning_rate: {}", cfg.lr);
    let schedule = match cfg.schedule {
        Schedule::Cosine => "cosine",
        Schedule::Linear => "linear",
        Schedule::Constant => "constant_with_warmup",
    };
    let _ = writeln!(s, "lr_scheduler: {schedule}");
    let _ = writeln!(s, "warmup_steps: {}", cfg.warmup_steps);
    let _ = writeln!(s, "weight_decay: {}", cfg.weight_decay);
    let _ = writeln!(s, "max_grad_norm: {}", cfg.max_grad_norm.unwrap_or(0.0));
    let _ = writeln!(s, "seed: {}", cfg.seed);
    let _ = writeln!(s, "bf16: {}", cfg.precision == Precision::Bf16);
    let _ = writeln!(s, "fp16: {}", cfg.precision == Precision::F16);
    let _ = writeln!(s, "tf32: false");
    let _ = writeln!(s, "gradient_checkpointing: {}", cfg.gradient_checkpointing);
    if let (Some(every), true) = (cfg.eval_every, has_val) {
        let _ = writeln!(s, "eval_steps: {every}");
    }
    let _ = writeln!(s, "logging_steps: 1");
    let _ = writeln!(s, "save_strategy: \"no\"");
    let _ = writeln!(s, "train_on_inputs: false");
    s
}
