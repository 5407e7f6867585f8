//! `doctune`: DocTune from the command line. Every subcommand calls the same `doctune-api` use
//! case as the desktop app; `--json` prints machine-readable output; any error exits non-zero
//! with one line that names the file and the problem.

use clap::{Parser, Subcommand};
use doctune_api::{projects, AddReport, ApiError, Home, Limits};
use doctune_core::{CancelToken, JobEvent, NullSink};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "doctune",
    version,
    about = "Fine-tune a language model on your own documents, locally."
)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// DocTune's data folder (default: $DOCTUNE_HOME, else the OS data folder).
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create and list projects.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
    },
    /// Add documents (files or folders) to a project: copied in, hashed, typed, deduplicated.
    Add {
        /// The project: its folder, or its id or name.
        #[arg(long, value_name = "DIR")]
        project: String,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Extract the text of documents: with FILEs, add them first (as `add` does) and extract
    /// those; without, extract every document of the project not extracted yet.
    Ingest {
        /// The project: its folder, or its id or name.
        #[arg(long, value_name = "DIR")]
        project: String,
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show what this machine offers: OS, CPU, RAM, disk, GPU, keychain.
    Doctor,
    /// The Hugging Face access token, kept in the OS keychain only.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Base models: pull from the Hub, import a folder, list the library.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Fine-tune a model on a dataset (LoRA or all weights); `train resume RUN_DIR` continues a
    /// run from its newest checkpoint. Prints the run folder; with --json, one JSON object per
    /// metrics line as training goes, then the summary.
    Train(TrainCli),
    /// A project's training runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Build, list and preview a project's training datasets.
    Dataset {
        #[command(subcommand)]
        command: DatasetCommand,
    },
    /// Generate text with a model (and a LoRA adapter), streamed to standard output. With
    /// --json, prints one object: {"token_ids": [generated ids, prompt excluded], "text", ...}.
    Generate(GenerateArgs),
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct TrainCli {
    #[command(subcommand)]
    resume: Option<TrainSub>,
    #[command(flatten)]
    args: Option<TrainArgs>,
}

#[derive(Subcommand, Debug)]
enum TrainSub {
    /// Continue a run from its newest checkpoint (refused if its model or dataset changed).
    Resume {
        run_dir: PathBuf,
        /// Threads for the computation (default: all cores).
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum MethodArg {
    Lora,
    Full,
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// The project: its folder, or its id or name.
    #[arg(long, value_name = "DIR", required = true)]
    project: Option<String>,
    /// The base model (a folder or a library id).
    #[arg(long, value_name = "MODEL_DIR", required = true)]
    model: Option<String>,
    /// The dataset (a dataset id of the project or a dataset folder).
    #[arg(long, value_name = "DIR", required = true)]
    dataset: Option<String>,
    #[arg(long, value_enum, default_value = "lora")]
    method: MethodArg,
    /// Optimiser steps (default: one epoch).
    #[arg(long, value_name = "N")]
    steps: Option<u64>,
    #[arg(long, default_value_t = 1.0, value_name = "E")]
    epochs: f64,
    #[arg(long, default_value_t = 4, value_name = "N")]
    micro_batch: usize,
    #[arg(long, default_value_t = 1, value_name = "K")]
    grad_accum: usize,
    #[arg(long, default_value_t = 2e-4, value_name = "X")]
    lr: f64,
    #[arg(long, default_value_t = 0, value_name = "N")]
    warmup_steps: u64,
    #[arg(long, default_value_t = 8, value_name = "R")]
    lora_rank: usize,
    #[arg(long, default_value_t = 16.0, value_name = "A")]
    lora_alpha: f64,
    #[arg(long, default_value_t = 0.05, value_name = "P")]
    lora_dropout: f32,
    /// Projections to adapt: a comma list of q,k,v,o,gate,up,down, or all.
    #[arg(long, default_value = "q,v", value_name = "LIST")]
    lora_targets: String,
    #[arg(long)]
    rslora: bool,
    #[arg(long, default_value_t = 0.0, value_name = "W")]
    weight_decay: f64,
    #[arg(long, default_value_t = 1.0, value_name = "G")]
    max_grad_norm: f64,
    #[arg(long, value_name = "N")]
    eval_every: Option<u64>,
    #[arg(long, default_value_t = 100, value_name = "N")]
    checkpoint_every: u64,
    /// Recompute activations in the backward pass (less memory, more time).
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Where to train: cpu, cuda or metal (GPUs need a build with that feature).
    #[arg(long, default_value = "cpu")]
    device: doctune_api::train::DeviceKind,
    /// Base weights and activations: f32, bf16 or f16 (bf16/f16 on GPUs; LoRA matrices and the
    /// optimiser stay f32).
    #[arg(long, default_value = "f32")]
    precision: doctune_api::train::Precision,
    /// Threads for the computation (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Subcommand, Debug)]
enum RunsCommand {
    /// List a project's runs with their last metrics.
    List {
        #[arg(long, value_name = "DIR")]
        project: String,
    },
}

#[derive(Subcommand, Debug)]
enum DatasetCommand {
    /// Tokenise the project's extracted documents (pretrain) or instruction files (instruct)
    /// into datasets/<id>/ with the model's tokenizer and chat template.
    Build(DatasetBuildArgs),
    /// Show the first examples of a dataset: the exact text and the trained-on spans
    /// (character offsets into it).
    Preview {
        /// The dataset folder (a project's datasets/<id>).
        #[arg(long, value_name = "DIR")]
        dataset: PathBuf,
        #[arg(long, default_value_t = 3, value_name = "K")]
        n: usize,
    },
    /// List a project's datasets.
    List {
        #[arg(long, value_name = "DIR")]
        project: String,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ModeArg {
    Pretrain,
    Instruct,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LossArg {
    Assistant,
    All,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum BadRowArg {
    Skip,
    Stop,
}

#[derive(clap::Args, Debug)]
struct DatasetBuildArgs {
    /// The project: its folder, or its id or name.
    #[arg(long, value_name = "DIR")]
    project: String,
    /// The model whose tokenizer and chat template to use (a folder or a library id).
    #[arg(long, value_name = "MODEL_DIR")]
    model: String,
    #[arg(long, value_enum)]
    mode: ModeArg,
    /// An instruction file (JSONL, JSON or CSV/TSV; alpaca, prompt/completion, sharegpt,
    /// OpenAI messages or text rows). Repeat for several.
    #[arg(long = "input", value_name = "FILE")]
    inputs: Vec<PathBuf>,
    /// Tokens per example (longer conversations are cut; documents are packed into windows of
    /// this length).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    seq_len: usize,
    /// Pretrain: tokens between window starts (default: seq-len, no overlap).
    #[arg(long, value_name = "N")]
    stride: Option<usize>,
    /// Pretrain: drop the last, shorter window.
    #[arg(long)]
    drop_last: bool,
    #[arg(long, default_value_t = 0.1, value_name = "F")]
    val_fraction: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Which tokens of a conversation carry loss.
    #[arg(long, value_enum, default_value = "assistant")]
    loss_on: LossArg,
    /// Skip bad rows (listed in the report) or stop at the first.
    #[arg(long, value_enum, default_value = "skip")]
    on_bad_row: BadRowArg,
    /// Keep exact duplicate examples.
    #[arg(long)]
    keep_duplicates: bool,
}

#[derive(clap::Args, Debug)]
struct GenerateArgs {
    /// A model folder (Hugging Face layout), or the id of a model in the library.
    #[arg(long, value_name = "DIR")]
    model: String,
    /// A PEFT LoRA adapter folder to apply.
    #[arg(long, value_name = "DIR")]
    adapter: Option<PathBuf>,
    #[arg(long, value_name = "TEXT")]
    prompt: String,
    /// Render the prompt as a user turn with the model's chat template (and stop at the end of
    /// the reply).
    #[arg(long)]
    chat: bool,
    /// A system message (with --chat).
    #[arg(long, value_name = "TEXT", requires = "chat")]
    system: Option<String>,
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_new_tokens: usize,
    /// Always take the most likely token (the default unless --temperature is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    greedy: bool,
    /// Sample with this temperature (> 0).
    #[arg(long, value_name = "T")]
    temperature: Option<f32>,
    /// Sample only among the K most likely tokens.
    #[arg(long, value_name = "K", requires = "temperature")]
    top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to P.
    #[arg(long, value_name = "P", requires = "temperature")]
    top_p: Option<f32>,
    /// Above 1 discourages repeating tokens of the prompt and the output.
    #[arg(long, default_value_t = 1.0, value_name = "R")]
    repetition_penalty: f32,
    /// Seed of the sampler (same seed, same output).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda or metal (the latter two need a build with that feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Store a token, read from standard input (never from the command line).
    Set,
    /// Say whether a token is stored (never shows it).
    Status,
    /// Delete the stored token.
    Delete,
    /// Ask the Hub whose token it is.
    Test,
}

#[derive(Subcommand, Debug)]
enum ModelCommand {
    /// Download a model from the Hub (safetensors and JSON files only, each hash-checked).
    Pull {
        /// The model id, like Qwen/Qwen2.5-0.5B-Instruct.
        repo: String,
        #[arg(long, default_value = "main")]
        revision: String,
    },
    /// Register a model folder you already have (validated first).
    Import {
        dir: PathBuf,
        /// Copy the files DocTune uses into its data folder instead of referencing them in place.
        #[arg(long)]
        copy: bool,
    },
    /// List the model library.
    List,
}

#[derive(Subcommand, Debug)]
enum ProjectCommand {
    /// Create a project.
    New { name: String },
    /// List projects.
    List,
    /// Show a project and its documents.
    Show {
        /// The project: its folder, or its id or name.
        project: String,
    },
}

fn main() -> ExitCode {
    doctune_api::init_logging();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            if cli.json {
                println!("{}", serde_json::json!({ "error": e }));
            }
            eprintln!("doctune: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), ApiError> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| ApiError::new(doctune_core::Code::Internal, e.to_string()))?;
    println!("{s}");
    Ok(())
}

fn run(cli: &Cli) -> Result<ExitCode, ApiError> {
    let home = match &cli.home {
        Some(h) => Home::at(h),
        None => Home::from_env()?,
    };
    match &cli.command {
        Command::Project { command } => match command {
            ProjectCommand::New { name } => {
                let p = projects::create(&home, name)?;
                if cli.json {
                    print_json(&p)?;
                } else {
                    println!("created project \"{}\" in {}", p.name, p.path);
                }
            }
            ProjectCommand::List => {
                let list = projects::list(&home)?;
                if cli.json {
                    print_json(&list)?;
                } else if list.is_empty() {
                    println!("no projects yet; create one with `doctune project new NAME`");
                } else {
                    for p in list {
                        println!(
                            "{:<24} {:>4} documents  {}",
                            p.name, p.document_count, p.path
                        );
                    }
                }
            }
            ProjectCommand::Show { project } => {
                let p = projects::open(&projects::locate(&home, project)?)?;
                if cli.json {
                    print_json(&p)?;
                } else {
                    println!("{} ({})", p.summary.name, p.summary.path);
                    for d in p.documents {
                        println!(
                            "  {:<40} {:<9} {:>10}  {}",
                            d.name,
                            d.format.label(),
                            doctune_core::units::human_bytes(d.size_bytes),
                            &d.sha256[..12]
                        );
                    }
                }
            }
        },
        Command::Add { project, files } => {
            let dir = projects::locate(&home, project)?;
            let report = doctune_api::add_documents(
                &dir,
                files,
                &Limits::default(),
                &NullSink,
                &CancelToken::new(),
            )?;
            if cli.json {
                print_json(&report)?;
            } else {
                print_add_report(&report);
            }
            if !report.failed.is_empty() {
                if !cli.json {
                    for f in &report.failed {
                        eprintln!("doctune: {}", f.message);
                    }
                }
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Ingest { project, files } => return ingest_command(cli, &home, project, files),
        Command::Token { command } => return token_command(cli, command),
        Command::Model { command } => return model_command(cli, &home, command),
        Command::Generate(args) => generate_command(cli, &home, args)?,
        Command::Dataset { command } => dataset_command(cli, &home, command)?,
        Command::Train(t) => train_command(cli, &home, t)?,
        Command::Runs {
            command: RunsCommand::List { project },
        } => {
            let dir = projects::locate(&home, project)?;
            let runs = doctune_api::train::list(&dir)?;
            if cli.json {
                print_json(&runs)?;
            } else if runs.is_empty() {
                println!("no runs yet; start one with `doctune train`");
            } else {
                for r in runs {
                    let loss = r
                        .last
                        .as_ref()
                        .map_or("-".to_string(), |l| format!("{:.4}", l.loss));
                    println!(
                        "{}  {} steps  loss {loss}  {} checkpoints  {}",
                        r.id, r.steps, r.checkpoints, r.path
                    );
                }
            }
        }
        Command::Doctor => {
            let report = doctune_api::doctor(&home, &doctune_gpu::Gpus::init());
            if cli.json {
                print_json(&report)?;
            } else {
                print_doctor(&report);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Limits the computation to `n` threads (candle and the tokenizer use rayon's global pool,
/// sized from this variable when it first starts).
fn set_threads(n: Option<usize>) {
    if let Some(n) = n.filter(|&n| n > 0) {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

fn train_command(cli: &Cli, home: &Home, t: &TrainCli) -> Result<(), ApiError> {
    let json = cli.json;
    // Text: progress lines on stderr. JSON: one object per line on stdout as training goes.
    let sink = move |e: JobEvent| match e {
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
    };
    let summary = match (&t.resume, &t.args) {
        (Some(TrainSub::Resume { run_dir, threads }), _) => {
            set_threads(*threads);
            doctune_api::train::resume(run_dir, &sink, &CancelToken::new())?
        }
        (None, Some(a)) => {
            set_threads(a.threads);
            let dir = projects::locate(home, a.project.as_deref().unwrap_or_default())?;
            let targets = doctune_api::train::Target::parse_list(&a.lora_targets)
                .map_err(ApiError::invalid)?;
            let config = doctune_api::train::RunConfig {
                base_model: a.model.clone().unwrap_or_default().into(),
                dataset: a.dataset.clone().unwrap_or_default().into(),
                method: match a.method {
                    MethodArg::Lora => doctune_api::train::Method::Lora {
                        rank: a.lora_rank,
                        alpha: a.lora_alpha,
                        dropout: a.lora_dropout,
                        rslora: a.rslora,
                        targets,
                    },
                    MethodArg::Full => doctune_api::train::Method::Full,
                },
                max_steps: a.steps,
                epochs: a.epochs,
                micro_batch: a.micro_batch,
                grad_accum: a.grad_accum,
                lr: a.lr,
                warmup_steps: a.warmup_steps,
                weight_decay: a.weight_decay,
                max_grad_norm: (a.max_grad_norm > 0.0).then_some(a.max_grad_norm),
                eval_every: a.eval_every,
                checkpoint_every: a.checkpoint_every,
                gradient_checkpointing: a.gradient_checkpointing,
                seed: a.seed,
                device: a.device,
                precision: a.precision,
                ..Default::default()
            };
            let mut started = |p: &std::path::Path| {
                if json {
                    println!("{}", serde_json::json!({ "runDir": p }));
                } else {
                    println!("{}", p.display());
                }
            };
            doctune_api::train::start(home, &dir, config, &sink, &CancelToken::new(), &mut started)?
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "give --project, --model and --dataset, or `train resume RUN_DIR`",
            ))
        }
    };
    if json {
        println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    } else {
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
    }
    Ok(())
}

fn dataset_command(cli: &Cli, home: &Home, command: &DatasetCommand) -> Result<(), ApiError> {
    use doctune_api::dataset::{self, BuildOptions, LossOn, Mode, OnBadRow};
    match command {
        DatasetCommand::Build(a) => {
            let dir = projects::locate(home, &a.project)?;
            let req = doctune_api::DatasetRequest {
                model: a.model.clone(),
                inputs: a.inputs.clone(),
                options: BuildOptions {
                    mode: match a.mode {
                        ModeArg::Pretrain => Mode::Pretrain,
                        ModeArg::Instruct => Mode::Instruct,
                    },
                    seq_len: a.seq_len,
                    stride: a.stride,
                    keep_last_partial: !a.drop_last,
                    val_fraction: a.val_fraction,
                    seed: a.seed,
                    loss_on: match a.loss_on {
                        LossArg::Assistant => LossOn::Assistant,
                        LossArg::All => LossOn::All,
                    },
                    on_bad_row: match a.on_bad_row {
                        BadRowArg::Skip => OnBadRow::Skip,
                        BadRowArg::Stop => OnBadRow::Stop,
                    },
                    dedup: !a.keep_duplicates,
                },
            };
            let sink = |e: JobEvent| {
                if let JobEvent::Warning { message } = e {
                    eprintln!("doctune: warning: {message}");
                }
            };
            let ds = dataset::build(home, &dir, &req, &sink, &CancelToken::new())?;
            if cli.json {
                print_json(&ds)?;
            } else {
                let s = &ds.meta.stats;
                println!("built dataset {} in {}", ds.id, ds.path);
                for n in &ds.meta.notes {
                    println!("  {n}");
                }
                println!(
                    "  train {} examples ({} tokens, {} trained), validation {} ({} tokens), split by {}",
                    s.train_examples, s.train_tokens, s.trained_tokens, s.val_examples, s.val_tokens, s.split_unit
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
            }
        }
        DatasetCommand::Preview { dataset: d, n } => {
            let examples = dataset::preview(d, *n)?;
            if cli.json {
                print_json(&examples)?;
            } else {
                for (i, ex) in examples.iter().enumerate() {
                    println!(
                        "── example {} ({} tokens, {} trained) ──",
                        i + 1,
                        ex.tokens,
                        ex.trained_tokens
                    );
                    // Trained parts between ⟦ ⟧.
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
                }
            }
        }
        DatasetCommand::List { project } => {
            let dir = projects::locate(home, project)?;
            let list = dataset::list(&dir)?;
            if cli.json {
                print_json(&list)?;
            } else if list.is_empty() {
                println!("no datasets yet; build one with `doctune dataset build`");
            } else {
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
        }
    }
    Ok(())
}

fn generate_command(cli: &Cli, home: &Home, a: &GenerateArgs) -> Result<(), ApiError> {
    use std::io::Write;
    let req = doctune_api::GenerateRequest {
        model: a.model.clone(),
        adapter: a.adapter.as_ref().map(|p| p.display().to_string()),
        prompt: a.prompt.clone(),
        chat: a.chat,
        system: a.system.clone(),
        max_new_tokens: a.max_new_tokens,
        sampling: doctune_api::generate::Sampling {
            temperature: if a.greedy { None } else { a.temperature },
            top_k: a.top_k,
            top_p: a.top_p,
            repetition_penalty: a.repetition_penalty,
            seed: a.seed,
        },
        device: Some(a.device.clone()),
    };
    // Text streams to stdout as it is generated (not with --json: one object at the end).
    let json = cli.json;
    let sink = move |e: JobEvent| {
        if let (false, JobEvent::Text { text }) = (json, e) {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    };
    let cache = doctune_api::ModelCache::default();
    let out = doctune_api::generate::generate(home, &cache, &req, &sink, &CancelToken::new())?;
    if cli.json {
        print_json(&serde_json::json!({
            "token_ids": out.token_ids,
            "text": out.text,
            "stop_reason": out.stop_reason,
            "prompt_tokens": out.prompt_tokens,
            "tokens_per_sec": out.tokens_per_sec,
            "model_dir": out.model_dir,
        }))?;
    } else {
        println!();
        eprintln!(
            "{} tokens, {:.1} tokens/s, stopped: {:?}",
            out.token_ids.len(),
            out.tokens_per_sec,
            out.stop_reason
        );
    }
    Ok(())
}

fn ingest_command(
    cli: &Cli,
    home: &Home,
    project: &str,
    files: &[PathBuf],
) -> Result<ExitCode, ApiError> {
    use doctune_api::ingest::{self, ExtractStatus, IngestLimits};
    let dir = projects::locate(home, project)?;
    let mut failed = false;
    let only = if files.is_empty() {
        None
    } else {
        let added = doctune_api::add_documents(
            &dir,
            files,
            &Limits::default(),
            &NullSink,
            &CancelToken::new(),
        )?;
        for f in &added.failed {
            failed = true;
            eprintln!("doctune: {}", f.message);
        }
        let mut only: Vec<(String, String)> = added
            .added
            .iter()
            .map(|d| (d.sha256.clone(), d.source.clone()))
            .collect();
        only.extend(
            added
                .duplicates
                .iter()
                .map(|d| (d.sha256.clone(), d.path.clone())),
        );
        Some(only)
    };
    let report = ingest::ingest(
        &dir,
        only.as_deref(),
        &IngestLimits::default(),
        &NullSink,
        &CancelToken::new(),
    )?;
    if cli.json {
        print_json(&report.records)?;
    } else {
        for r in &report.records {
            match r.status {
                ExtractStatus::Error => {}
                _ => println!(
                    "{:<8} {} ({}, {}{} characters)",
                    if r.status == ExtractStatus::Ok {
                        "ok"
                    } else {
                        "warnings"
                    },
                    r.path,
                    r.format.label(),
                    if r.pages > 0 {
                        format!("{} pages, ", r.pages)
                    } else {
                        String::new()
                    },
                    r.chars
                ),
            }
            for w in &r.warnings {
                println!("  warning: {w}");
            }
        }
        for group in &report.duplicate_texts {
            println!("same text: {}", group.join(", "));
        }
        if report.repeated_paragraphs > 0 {
            println!(
                "{} paragraph(s) repeat across documents",
                report.repeated_paragraphs
            );
        }
    }
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
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn token_command(cli: &Cli, command: &TokenCommand) -> Result<ExitCode, ApiError> {
    use doctune_api::{token, Keychain, Sensitive};
    let store = Keychain;
    match command {
        TokenCommand::Set => {
            let value = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                rpassword::prompt_password("Hugging Face access token (input hidden): ")
            } else {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map(|_| line)
            }
            .map_err(|e| {
                ApiError::invalid(format!("cannot read the token from standard input: {e}"))
            })?;
            token::set(&store, Sensitive::new(value))?;
            if cli.json {
                print_json(&serde_json::json!({"stored": true}))?;
            } else {
                println!("token stored in the OS keychain");
            }
        }
        TokenCommand::Status => {
            let st = token::status(&store);
            if cli.json {
                print_json(&st)?;
            } else if let Some(p) = &st.problem {
                println!("cannot tell: {p}");
            } else {
                println!(
                    "{}",
                    if st.stored {
                        "a token is stored in the OS keychain"
                    } else {
                        "no token stored"
                    }
                );
            }
            if st.problem.is_some() {
                return Ok(ExitCode::FAILURE);
            }
        }
        TokenCommand::Delete => {
            token::delete(&store)?;
            if cli.json {
                print_json(&serde_json::json!({"stored": false}))?;
            } else {
                println!("token deleted");
            }
        }
        TokenCommand::Test => {
            let home = match &cli.home {
                Some(h) => Home::at(h),
                None => Home::from_env()?,
            };
            let name = token::test(&home, &store)?;
            if cli.json {
                print_json(&serde_json::json!({"name": name}))?;
            } else {
                println!("the token belongs to {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints download progress to stderr at most once a second (text mode only).
struct StderrProgress(doctune_core::Throttle);

impl doctune_core::ProgressSink for StderrProgress {
    fn emit(&self, event: doctune_core::JobEvent) {
        if let doctune_core::JobEvent::Progress {
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

fn model_command(cli: &Cli, home: &Home, command: &ModelCommand) -> Result<ExitCode, ApiError> {
    use doctune_api::models;
    use doctune_core::units::human_bytes;
    let show = |m: &doctune_api::ModelEntry| {
        println!(
            "{:<36} {:<8} {:>7}M params {:<5} {:>10}  {}",
            m.name,
            m.family.label(),
            m.parameters / 1_000_000,
            m.dtype,
            human_bytes(m.size_bytes),
            m.path
        )
    };
    match command {
        ModelCommand::Pull { repo, revision } => {
            let sink: Box<dyn doctune_core::ProgressSink> = if cli.json {
                Box::new(NullSink)
            } else {
                Box::new(StderrProgress(doctune_core::Throttle::per_second(1)))
            };
            let m = models::pull(
                home,
                &doctune_api::Keychain,
                repo,
                revision,
                sink.as_ref(),
                &CancelToken::new(),
            )?;
            if cli.json {
                print_json(&m)?;
            } else {
                show(&m);
            }
        }
        ModelCommand::Import { dir, copy } => {
            let m = models::import(home, dir, *copy)?;
            if cli.json {
                print_json(&m)?;
            } else {
                show(&m);
            }
        }
        ModelCommand::List => {
            let list = models::list(home)?;
            if cli.json {
                print_json(&list)?;
            } else if list.is_empty() {
                println!(
                    "no models yet; `doctune model pull ORG/NAME` or `doctune model import DIR`"
                );
            } else {
                list.iter().for_each(show);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_add_report(r: &AddReport) {
    use doctune_core::units::human_bytes;
    for d in &r.added {
        println!(
            "added      {} ({}, {}, sha256 {})",
            d.name,
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
            d.path, d.existing
        );
    }
    if r.skipped_hidden > 0 {
        println!(
            "skipped    {} hidden file(s) or folder(s)",
            r.skipped_hidden
        );
    }
}

fn print_doctor(r: &doctune_api::DoctorReport) {
    use doctune_core::units::human_bytes;
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
