//! The model card (`README.md`) every export carries: what the model is (the base model and its
//! licence, the method and its settings), what it was trained on (every source document by
//! name and sha256, from the dataset's `meta.json`), how it did (final training and evaluation
//! loss, perplexity), and a warning that a model can reproduce its training data.

use crate::source::{Source, Trained};
use crate::{io, ExportError, ExportRequest, Format};
use doctune_dataset::DatasetDir;
use doctune_train::{Method, RunDir};
use std::fmt::Write as _;
use std::path::Path;

pub const CARD: &str = "README.md";

/// The base model's licence: the `license:` of its model card's front matter, else the name of
/// a licence file in its folder.
fn licence(base: &Path) -> String {
    if let Ok(text) = doctune_core::Scope::read_model_file(base.join("README.md"), 1 << 20) {
        let text = String::from_utf8_lossy(&text);
        if let Some(front) = text.strip_prefix("---") {
            if let Some(end) = front.find("\n---") {
                for line in front[..end].lines() {
                    if let Some(v) = line.trim().strip_prefix("license:") {
                        let v = v.trim().trim_matches('"');
                        if !v.is_empty() {
                            return v.to_string();
                        }
                    }
                }
            }
        }
    }
    for name in [
        "LICENSE",
        "LICENSE.md",
        "LICENSE.txt",
        "LICENCE",
        "LICENCE.md",
    ] {
        if base.join(name).is_file() {
            return format!("see the base model's {name}");
        }
    }
    "unknown: check the base model's terms before sharing this model".into()
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

/// The card's text.
pub fn render(src: &Source, req: &ExportRequest, warnings: &[String]) -> String {
    let base = src.base_name(req.base_name.as_deref());
    let licence = licence(&src.base_dir);
    let cfg = &src.run.config;
    let mut s = String::new();
    let adapter = matches!(req.options.format, Format::Peft | Format::GgufLora);
    let _ = writeln!(s, "---");
    let _ = writeln!(s, "base_model: {base}");
    if adapter {
        let _ = writeln!(s, "library_name: peft");
    }
    let _ = writeln!(
        s,
        "tags:\n- doctune\n- {}",
        if adapter { "lora" } else { "fine-tuned" }
    );
    let _ = writeln!(s, "---\n");
    let _ = writeln!(s, "# {base}, fine-tuned with DocTune\n");
    let _ = writeln!(
        s,
        "{} of a {} model ({} parameters) trained on a person's own documents with DocTune, on their own machine.\n",
        req.options.format.label(),
        src.config.family.label(),
        doctune_core::units::human_count(src.config.parameter_count())
    );
    let _ = writeln!(
        s,
        "- **Base model:** {base} (`{}`)",
        src.config.architecture
    );
    let _ = writeln!(s, "- **Base model licence:** {licence}. This model is a derivative of the base model and is bound by its licence.");
    let _ = writeln!(
        s,
        "- **Run:** `{}`, step {}{}",
        src.run.id,
        src.step,
        if src.is_final {
            " (final)"
        } else {
            " (a checkpoint)"
        }
    );
    match &cfg.method {
        Method::Lora {
            rank,
            alpha,
            dropout,
            rslora,
            targets,
        } => {
            let t: Vec<&str> = targets.iter().map(|t| t.name()).collect();
            let _ = writeln!(
                s,
                "- **Method:** LoRA, rank {rank}, alpha {alpha}, dropout {dropout}{}, on {}",
                if *rslora { ", rsLoRA" } else { "" },
                t.join(", ")
            );
        }
        Method::Full => {
            let _ = writeln!(s, "- **Method:** full fine-tuning (every weight)");
        }
    }
    let _ = writeln!(
        s,
        "- **Training:** {} steps of {} × {} examples, learning rate {:e} ({:?} schedule, {} warmup steps), weight decay {}, gradient clipping {}, seed {}, {:?} in {:?}",
        src.step,
        cfg.micro_batch,
        cfg.grad_accum,
        cfg.lr,
        cfg.schedule,
        cfg.warmup_steps,
        cfg.weight_decay,
        cfg.max_grad_norm.map_or("off".into(), |g| g.to_string()),
        cfg.seed,
        cfg.device,
        cfg.precision
    );
    let history = RunDir::at(&src.run_dir).history().unwrap_or_default();
    let eval = history
        .iter()
        .filter(|m| m.step <= src.step)
        .filter_map(|m| m.eval_loss)
        .next_back();
    let _ = writeln!(
        s,
        "- **Final loss:** training {}, evaluation {} (perplexity {})",
        fmt_opt(src.metrics.as_ref().map(|m| m.loss), 4),
        fmt_opt(eval, 4),
        fmt_opt(eval.map(f64::exp), 2)
    );
    if let Trained::Lora(l) = &src.trained {
        let _ = writeln!(
            s,
            "- **Adapted modules:** {}",
            l.target_modules().join(", ")
        );
    }
    s.push_str(&data_section(&cfg.dataset));
    let _ = writeln!(s, "\n## Before you share this model\n");
    let _ = writeln!(s, "Language models can memorise and reproduce parts of the data they were trained on, word for word. Anyone who can prompt this model may be able to extract text from the documents listed above. Review what it says before you share it, and do not share a model trained on documents you have no right to distribute.");
    if !warnings.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for w in warnings {
            let _ = writeln!(s, "- {w}");
        }
    }
    let _ = writeln!(s, "\nMade with DocTune {}.", env!("CARGO_PKG_VERSION"));
    s
}

pub(crate) fn write(
    dir: &Path,
    src: &Source,
    req: &ExportRequest,
    warnings: &[String],
) -> Result<(), ExportError> {
    let p = dir.join(CARD);
    doctune_core::write_atomic(&p, render(src, req, warnings).as_bytes()).map_err(io(&p))
}

/// The model card's "Training data" section for the dataset in `dataset`: its mode, sizes and
/// every source document with its sha256 (or a line saying it is gone). Job bundles carry it as
/// `DATA.md`.
pub fn data_section(dataset: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n## Training data\n");
    match DatasetDir::at(dataset).read_meta() {
        Ok(meta) => {
            let _ = writeln!(
                s,
                "Dataset `{}` ({:?}, sequences of {} tokens, {} training and {} validation examples) built from:\n",
                meta.id,
                meta.options.mode,
                meta.options.seq_len,
                meta.stats.train_examples,
                meta.stats.val_examples
            );
            let _ = writeln!(s, "| document | sha256 |\n|---|---|");
            for src in &meta.sources {
                let name = Path::new(&src.name)
                    .file_name()
                    .map_or(src.name.clone(), |n| n.to_string_lossy().into_owned());
                let _ = writeln!(s, "| {} | `{}` |", name.replace('|', "\\|"), src.sha256);
            }
        }
        Err(_) => {
            let _ = writeln!(
                s,
                "The dataset ({}) is no longer available; its documents cannot be listed.",
                dataset.display()
            );
        }
    }
    s
}
