//! What the command line shows people: one function per report, and the progress sinks that
//! print a job's events as it runs. Nothing here decides anything; `main.rs` calls the API and
//! hands the result to one of these (or prints it as JSON).

use doctune_api::ingest::{ExtractStatus, IngestReport};
use doctune_api::train::{RunInfo, RunSummary};
use doctune_api::{AddReport, ApiError, DatasetSummary, ModelEntry, PreviewExample};
use doctune_core::units::human_bytes;
use doctune_core::{JobEvent, ProgressSink, Throttle};

/// `value` as pretty JSON on stdout.
pub fn json(value: &impl serde::Serialize) -> Result<(), ApiError> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| ApiError::new(doctune_core::Code::Internal, e.to_string()))?;
    println!("{s}");
    Ok(())
}

/// Prints download progress to stderr at most once a second.
pub struct StderrProgress(pub Throttle);

impl ProgressSink for StderrProgress {
    fn emit(&self, event: JobEvent) {
        if let JobEvent::Progress {
            current,
            total,
            message,
            ..
        } = event
        {
            if current == total || self.0.ready() {
                let pct = (current * 100).checked_div(total).unwrap_or(100);
                eprintln!("{pct:>3}%  {}", message.unwrap_or_default());
            }
        }
    }
}

/// A dataset build's events on stderr: warnings, and the question–answer mode's passages
/// (at most once a second, with the ETA).
pub struct DatasetProgress(pub Throttle);

impl ProgressSink for DatasetProgress {
    fn emit(&self, event: JobEvent) {
        match event {
            JobEvent::Progress {
                current,
                total,
                unit,
                message,
                eta_secs,
            } if unit == "passages" && (current == total || self.0.ready()) => {
                let eta = eta_secs.map_or(String::new(), |s| {
                    format!("  ETA {}", doctune_core::units::human_duration(s))
                });
                eprintln!(
                    "passage {current}/{total}  {}{eta}",
                    message.unwrap_or_default()
                );
            }
            e @ JobEvent::Warning { .. } => warnings(e),
            _ => {}
        }
    }
}

/// Prints warnings to stderr, and nothing else.
pub fn warnings(e: JobEvent) {
    if let JobEvent::Warning { message } = e {
        eprintln!("doctune: warning: {message}");
    }
}

/// A training run's events: with `json`, metrics and checkpoints as JSON lines on stdout;
/// otherwise a line per metrics event on stderr.
pub fn train_event(json: bool, e: JobEvent) {
    match e {
        JobEvent::Metrics { .. } | JobEvent::Checkpoint { .. } if json => {
            if let Ok(line) = serde_json::to_string(&e) {
                println!("{line}");
            }
        }
        JobEvent::Metrics {
            step,
            loss,
            eval_loss,
            lr,
            tokens_per_sec,
            eta_secs,
            ..
        } => {
            let eval = eval_loss.map_or(String::new(), |e| format!("  eval {e:.4}"));
            eprintln!("step {step}  loss {loss:.4}{eval}  lr {lr:.2e}  {tokens_per_sec:.0} tokens/s  ETA {eta_secs:.0} s");
        }
        JobEvent::Checkpoint { path } => eprintln!("checkpoint {path}"),
        JobEvent::Warning { message } => eprintln!("doctune: warning: {message}"),
        _ => {}
    }
}

/// The demo's progress: its stages and training's metrics on stderr (text), or every event as
/// one JSON object per line on stdout.
pub fn demo_event(json: bool, e: JobEvent) {
    if json {
        if let Ok(line) = serde_json::to_string(&e) {
            println!("{line}");
        }
        return;
    }
    match e {
        JobEvent::Progress {
            current,
            total,
            unit,
            message: Some(m),
            ..
        } if unit == "stages" => eprintln!("[{}/{total}] {m}", current + 1),
        JobEvent::Metrics { step, .. } if step % 25 != 0 => {}
        e @ (JobEvent::Metrics { .. } | JobEvent::Warning { .. }) => train_event(false, e),
        _ => {}
    }
}

pub fn demo_report(r: &doctune_api::demo::DemoReport) {
    println!();
    println!(
        "DocTune demo: {} documents, a {}-parameter model ({} tokens of vocabulary) trained from scratch for {} steps in {:.0} s{}",
        r.documents,
        r.parameters,
        r.vocab_size,
        r.steps,
        r.seconds,
        if r.reused.is_empty() {
            String::new()
        } else {
            format!(" (reused: {})", r.reused.join(", "))
        }
    );
    println!("validation loss     {:.3} nats/token", r.val_loss);
    println!(
        "  unigram baseline  {:.3}  (the best a model that ignores context can do)",
        r.unigram_entropy
    );
    println!("  untrained model   {:.3}", r.untrained_loss);
    println!();
    println!("{}{}", r.prompt, r.sample);
    println!();
    println!("project   {}", r.project_dir);
    println!("GGUF      {}", r.gguf);
    println!("Modelfile {}", r.modelfile);
    println!("merged    {}", r.merged_dir);
    println!();
    println!("next:");
    println!("  {}", r.ollama_create);
    println!(
        "  doctune generate --model {} --prompt \"To export a model,\"",
        r.merged_dir
    );
    println!("  or train on your own documents: doctune project new Notes; doctune ingest --project Notes FILES…; doctune train --project Notes --method scratch");
}

pub fn run_summary(summary: &RunSummary) {
    println!(
        "{} {} of {} steps; loss {}; eval loss {} (perplexity {}); output {}",
        if summary.cancelled {
            "stopped after"
        } else {
            "finished"
        },
        summary.steps,
        summary.total_steps,
        summary.final_loss.map_or("-".into(), |l| format!("{l:.4}")),
        summary.eval_loss.map_or("-".into(), |l| format!("{l:.4}")),
        summary
            .eval_perplexity
            .map_or("-".into(), |p| format!("{p:.2}")),
        summary.output.display()
    );
    if let Some(base) = summary.base_eval_loss {
        println!(
            "before training: eval loss {base:.4} (perplexity {:.2})",
            base.exp()
        );
    }
}

pub fn runs(runs: &[RunInfo]) {
    if runs.is_empty() {
        println!("no runs yet; start one with `doctune train`");
    }
    for r in runs {
        let loss = r
            .last
            .as_ref()
            .map_or("-".to_string(), |l| format!("{:.4}", l.loss));
        println!(
            "{}  {} steps  loss {loss}  {} checkpoints  {}",
            r.id, r.steps, r.checkpoints, r.path
        );
        if !r.exports.is_empty() {
            println!("  exports: {}", r.exports.join(", "));
        }
    }
}

pub fn dataset_built(ds: &DatasetSummary) {
    let s = &ds.meta.stats;
    println!("built dataset {} in {}", ds.id, ds.path);
    for n in &ds.meta.notes {
        println!("  {n}");
    }
    println!(
        "  train {} examples ({} tokens, {} trained), validation {} ({} tokens), split by {}",
        s.train_examples,
        s.train_tokens,
        s.trained_tokens,
        s.val_examples,
        s.val_tokens,
        s.split_unit
    );
    println!(
        "  truncated {}, duplicates {}, bad rows {}",
        s.truncated, s.duplicates, s.bad_rows
    );
    for (why, n) in &s.dropped {
        println!("  dropped {n}: {why}");
    }
    for b in ds.meta.bad_rows.iter().take(20) {
        println!("  bad row {}:{}: {}", b.file, b.line, b.reason);
    }
    if let Some(qa) = &ds.meta.qa {
        qa_report(qa);
    }
}

/// A question–answer build's counts, per document and in total.
fn qa_report(qa: &doctune_api::dataset::QaReport) {
    let origin: Vec<String> = qa
        .by_origin
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if qa.generator == "template" {
        println!("  pairs by the templates (no model): {}", origin.join(", "));
    } else {
        println!(
            "  pairs by {} (prompt v{}): {}, {:.0} s generating",
            qa.generator,
            qa.prompt_version,
            origin.join(", "),
            qa.generation_seconds
        );
    }
    println!(
        "  {:<32} {:>8} {:>6} {:>9} {:>6}  dropped",
        "document", "passages", "cached", "generated", "kept"
    );
    for d in qa.documents.iter().chain([&qa.total]) {
        let dropped: Vec<String> = d.dropped.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let mut extra = dropped;
        if d.malformed_replies > 0 {
            extra.push(format!("{} unreadable replies", d.malformed_replies));
        }
        if d.retries > 0 {
            extra.push(format!("{} retried", d.retries));
        }
        let name = if d.document.is_empty() {
            "total"
        } else {
            &d.document
        };
        println!(
            "  {:<32} {:>8} {:>6} {:>9} {:>6}  {}",
            name,
            d.passages,
            d.from_cache,
            d.generated,
            d.kept,
            extra.join(", ")
        );
    }
}

/// Each example with its trained parts between ⟦ ⟧.
pub fn preview(examples: &[PreviewExample]) {
    for (i, ex) in examples.iter().enumerate() {
        println!(
            "── example {} ({} tokens, {} trained) ──",
            i + 1,
            ex.tokens,
            ex.trained_tokens
        );
        let chars: Vec<char> = ex.text.chars().collect();
        let mut at = 0;
        let mut out = String::new();
        for &(a, b) in &ex.spans {
            out.extend(&chars[at..a]);
            out.push('⟦');
            out.extend(&chars[a..b]);
            out.push('⟧');
            at = b;
        }
        out.extend(&chars[at..]);
        println!("{out}");
        if let Some(src) = &ex.source {
            let section = src
                .section
                .as_deref()
                .map_or(String::new(), |s| format!(", {s}"));
            println!(
                "   source: {}{section}, characters {}–{} ({}, support {:.2})",
                src.document,
                src.start,
                src.end,
                src.origin.name(),
                src.support
            );
            for line in src.passage.lines() {
                println!("   │ {line}");
            }
        }
    }
}

pub fn datasets(list: &[DatasetSummary]) {
    if list.is_empty() {
        println!("no datasets yet; build one with `doctune dataset build`");
    }
    for d in list {
        println!(
            "{}  {:?}  {} train / {} val examples  seq {}",
            d.id,
            d.meta.options.mode,
            d.meta.stats.train_examples,
            d.meta.stats.val_examples,
            d.meta.options.seq_len
        );
    }
}

pub fn ingest_report(report: &IngestReport) {
    for r in &report.records {
        if r.status != ExtractStatus::Error {
            println!(
                "{:<8} {} ({}, {}{} characters)",
                if r.status == ExtractStatus::Ok {
                    "ok"
                } else {
                    "warnings"
                },
                crate::term::value(&r.path),
                r.format.label(),
                if r.pages > 0 {
                    format!("{} pages, ", r.pages)
                } else {
                    String::new()
                },
                r.chars
            );
        }
        for w in &r.warnings {
            println!("  warning: {w}");
        }
    }
    for group in &report.duplicate_texts {
        println!("same text: {}", crate::term::value(&group.join(", ")));
    }
    if report.repeated_paragraphs > 0 {
        println!(
            "{} paragraph(s) repeat across documents",
            report.repeated_paragraphs
        );
    }
}

/// The failed extractions, one line each on stderr; true if there was any.
pub fn ingest_failures(report: &IngestReport) -> bool {
    let mut failed = false;
    for r in report
        .records
        .iter()
        .filter(|r| r.status == ExtractStatus::Error)
    {
        failed = true;
        eprintln!(
            "doctune: {}",
            r.error.as_deref().unwrap_or("extraction failed")
        );
    }
    failed
}

/// The files an add could not take, one line each on stderr; true if there was any.
pub fn add_failures(report: &AddReport) -> bool {
    for f in &report.failed {
        eprintln!("doctune: {}", f.message);
    }
    !report.failed.is_empty()
}

pub fn model(m: &ModelEntry) {
    println!(
        "{:<36} {:<8} {:>7}M params {:<5} {:>10}  {}",
        crate::term::value(&m.name),
        m.family_label,
        m.parameters / 1_000_000,
        m.dtype,
        human_bytes(m.size_bytes),
        m.path
    )
}

pub fn add_report(r: &AddReport) {
    for d in &r.added {
        println!(
            "added      {} ({}, {}, sha256 {})",
            crate::term::value(&d.name),
            d.format.label(),
            human_bytes(d.size_bytes),
            &d.sha256[..12]
        );
        if let Some(w) = &d.warning {
            println!("  warning: {w}");
        }
    }
    for d in &r.duplicates {
        println!(
            "duplicate  {}: same content as {}, not copied again",
            crate::term::value(&d.path),
            crate::term::value(&d.existing)
        );
    }
    if r.skipped_hidden > 0 {
        println!(
            "skipped    {} hidden file(s) or folder(s)",
            r.skipped_hidden
        );
    }
}

pub fn doctor(r: &doctune_api::DoctorReport) {
    let s = &r.system;
    println!("DocTune   {}", r.version);
    println!(
        "OS        {} ({}{})",
        s.os,
        s.arch,
        s.kernel
            .as_deref()
            .map(|k| format!(", kernel {k}"))
            .unwrap_or_default()
    );
    println!(
        "CPU       {} ({} logical cores{})",
        s.cpu,
        s.logical_cores,
        s.physical_cores
            .map(|p| format!(", {p} physical"))
            .unwrap_or_default()
    );
    println!(
        "RAM       {} total, {} available",
        human_bytes(s.total_memory_bytes),
        human_bytes(s.available_memory_bytes)
    );
    match r.free_disk_bytes {
        Some(b) => println!("Disk      {} free at {}", human_bytes(b), r.data_dir),
        None => println!("Disk      free space unknown at {}", r.data_dir),
    }
    if r.gpus.is_empty() {
        println!(
            "GPU       {}",
            r.gpu_message.as_deref().unwrap_or("no NVIDIA GPU found")
        );
    }
    for g in &r.gpus {
        println!(
            "GPU {}     {} ({} of {} used{}{})",
            g.index,
            g.name,
            human_bytes(g.memory_used_bytes),
            human_bytes(g.memory_total_bytes),
            g.utilization_percent
                .map(|u| format!(", {u}% busy"))
                .unwrap_or_default(),
            g.temperature_c
                .map(|t| format!(", {t} °C"))
                .unwrap_or_default()
        );
    }
    let k = &r.keychain;
    let state = if k.usable {
        "reachable and unlocked".to_string()
    } else if k.reachable {
        format!("reachable but not usable — {}", k.message)
    } else {
        format!("not reachable — {}", k.message)
    };
    println!("Keychain  {}: {state}", k.backend);
}

pub fn projects(list: &[doctune_api::ProjectSummary]) {
    if list.is_empty() {
        println!("no projects yet; create one with `doctune project new NAME`");
    }
    for p in list {
        println!(
            "{:<24} {:>4} documents  {}",
            p.name, p.document_count, p.path
        );
    }
}

pub fn project(p: &doctune_api::Project) {
    println!("{} ({})", p.summary.name, p.summary.path);
    for d in &p.documents {
        println!(
            "  {:<40} {:<9} {:>10}  {}",
            d.name,
            d.format.label(),
            human_bytes(d.size_bytes),
            &d.sha256[..12]
        );
    }
}

pub fn generated(out: &doctune_api::GenerateResult) {
    println!();
    eprintln!(
        "{} tokens, {:.1} tokens/s, stopped: {:?}",
        out.token_ids.len(),
        out.tokens_per_sec,
        out.stop_reason
    );
}

pub fn token_status(st: &doctune_api::TokenStatus) {
    if let Some(p) = &st.problem {
        println!("cannot tell: {p}");
    } else if st.stored {
        println!("a token is stored in the OS keychain");
    } else {
        println!("no token stored");
    }
}

pub fn export_report(r: &doctune_api::export::ExportReport) {
    println!("exported {} to {}", r.format.label(), r.dir.display());
    for f in &r.files {
        println!(
            "  {:<48} {:>10}  sha256 {}",
            f.path,
            human_bytes(f.bytes),
            &f.sha256[..12]
        );
    }
    for w in &r.warnings {
        println!("  note: {w}");
    }
    for f in &r.fallbacks {
        println!(
            "  {} stored as {} instead of {} ({})",
            f.tensor,
            f.used.name(),
            f.wanted.name(),
            f.reason
        );
    }
    if let Some(c) = &r.ollama_create {
        println!("next: {c}");
    }
}
