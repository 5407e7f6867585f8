//! The command line's grammar: every subcommand, flag and default (clap), and the conversions
//! from flags to the API's request types. Defaults come from the library types
//! (`BuildOptions::default`, `RunConfig::default` through `RunOverrides`), never from here.

use clap::{Parser, Subcommand};
use doctune_api::dataset::{BuildOptions, Generator, LossOn, Mode, OnBadRow, QaOptions};
use doctune_api::train::{MethodKind, Preset, RunOverrides, Target};
use doctune_api::ApiError;
use std::path::PathBuf;
use std::sync::LazyLock;

/// The dataset builder's defaults, shown in `--help`.
static BUILD_DEFAULTS: LazyLock<BuildOptions> = LazyLock::new(BuildOptions::default);
static QA_DEFAULTS: LazyLock<QaOptions> = LazyLock::new(QaOptions::default);

#[derive(Parser, Debug)]
#[command(
    name = "doctune",
    version,
    about = "Fine-tune a language model on your own documents, locally."
)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// DocTune's data folder (default: $DOCTUNE_HOME, else the OS data folder).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
    Train(Box<TrainCli>),
    /// A project's training runs.
    /// Write the training job as a bundle for cluster trainers: the dataset pre-tokenised, a
    /// train.py (transformers Trainer + PEFT) that torchrun / accelerate launch run unchanged,
    /// an Axolotl config, a README with the commands and a manifest. Takes every run setting of
    /// `train`.
    Bundle(Box<BundleCli>),
    #[command(alias = "run")]
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Build, list and preview a project's training datasets.
    Dataset {
        #[command(subcommand)]
        command: DatasetCommand,
    },
    /// Export a run: a PEFT adapter, a merged Hugging Face model, GGUF, a GGUF LoRA adapter, or
    /// GGUF with an Ollama Modelfile. Into the project's exports/<id>/ unless --out is given.
    Export(ExportArgs),
    /// Generate text with a model (and a LoRA adapter), streamed to standard output. With
    /// --json, prints one object: {"tokenIds": [generated ids, prompt excluded], "text", ...}.
    Generate(GenerateArgs),
    /// The whole job on DocTune's own user guide: a project, its documents, a tiny model
    /// trained from scratch on the CPU, an Ollama export and a sample. Reuses what an earlier
    /// demo made. With --json, one object per progress event, then the report.
    Demo(DemoArgs),
}

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Keep everything the demo makes under DIR (a DocTune data folder of its own) instead of
    /// DocTune's data folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Optimiser steps of the training run.
    #[arg(long, value_name = "N", default_value_t = doctune_api::demo::DEFAULT_STEPS)]
    pub steps: u64,
    /// The prompt the trained model continues.
    #[arg(long, value_name = "TEXT", default_value = doctune_api::demo::PROMPT)]
    pub prompt: String,
    /// Threads for the computation (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TrainCli {
    #[command(subcommand)]
    pub resume: Option<TrainSub>,
    #[command(flatten)]
    pub args: Option<TrainArgs>,
}

#[derive(Subcommand, Debug)]
pub enum TrainSub {
    /// Continue a run from its newest checkpoint (refused if its model or dataset changed).
    Resume {
        run_dir: PathBuf,
        /// Threads for the computation (default: all cores).
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum MethodArg {
    Lora,
    Full,
    /// A new model: a tokenizer trained on the project's documents, a small Llama of --size,
    /// every weight trained (no --model or --dataset).
    Scratch,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum SizeArg {
    /// About 6M parameters, a 4,096-token vocabulary.
    Tiny,
    /// About 36M parameters, an 8,192-token vocabulary.
    Small,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PresetArg {
    Quick,
    Balanced,
    Thorough,
}

/// A run's settings. Every setting left out comes from the preset when one is given (scaled to
/// the dataset), else from DocTune's defaults (`RunConfig::default`): LoRA rank 8 (alpha 16,
/// dropout 0.05) on q,v, one epoch, micro-batch 4, accumulation 1, lr 2e-4 with a cosine
/// schedule, no warmup, clipping at 1.0, checkpoints every 100 steps, seed 0, the CPU in f32.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The project: its folder, or its id or name.
    #[arg(long, value_name = "DIR", required = true)]
    pub project: Option<String>,
    /// The base model (a folder or a library id); not with --method scratch.
    #[arg(long, value_name = "MODEL_DIR")]
    pub model: Option<String>,
    /// The dataset (a dataset id of the project or a dataset folder); not with --method scratch.
    #[arg(long, value_name = "DIR")]
    pub dataset: Option<String>,
    /// --method scratch: the new model's size preset.
    #[arg(long, value_enum, conflicts_with_all = ["model", "dataset"])]
    pub size: Option<SizeArg>,
    /// --method scratch: the most tokens of the new vocabulary (default: the size's).
    #[arg(long, value_name = "N")]
    pub vocab_size: Option<usize>,
    /// --method scratch: tokens per training example.
    #[arg(long, value_name = "N")]
    pub seq_len: Option<usize>,
    /// --method scratch: explicit dimensions instead of the size preset's, as
    /// HIDDEN,LAYERS,HEADS,KV_HEADS,INTERMEDIATE,CONTEXT (e.g. 384,8,6,2,1024,1024).
    #[arg(long, value_name = "H,L,A,KV,I,C")]
    pub dims: Option<String>,
    /// Start from a preset scaled to the dataset (quick, balanced, thorough).
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// Optimiser steps (default: the epochs over the training split).
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    #[arg(long, value_name = "E")]
    pub epochs: Option<f64>,
    #[arg(long, value_name = "N")]
    pub micro_batch: Option<usize>,
    #[arg(long, value_name = "K")]
    pub grad_accum: Option<usize>,
    #[arg(long, value_name = "X")]
    pub lr: Option<f64>,
    #[arg(long, value_name = "N")]
    pub warmup_steps: Option<u64>,
    /// A new rank without --lora-alpha keeps alpha/rank as it was (alpha 2 × rank by default).
    #[arg(long, value_name = "R")]
    pub lora_rank: Option<usize>,
    #[arg(long, value_name = "A")]
    pub lora_alpha: Option<f64>,
    #[arg(long, value_name = "P")]
    pub lora_dropout: Option<f32>,
    /// Projections to adapt: a comma list of q,k,v,o,gate,up,down, or all.
    #[arg(long, value_name = "LIST")]
    pub lora_targets: Option<String>,
    #[arg(long)]
    pub rslora: bool,
    #[arg(long, value_name = "W")]
    pub weight_decay: Option<f64>,
    /// Clip the global gradient norm to G (0 turns clipping off).
    #[arg(long, value_name = "G")]
    pub max_grad_norm: Option<f64>,
    #[arg(long, value_name = "N")]
    pub eval_every: Option<u64>,
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Recompute activations in the backward pass (less memory, more time).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Where to train: cpu, cuda or metal (GPUs need a build with that feature).
    #[arg(long)]
    pub device: Option<doctune_api::train::DeviceKind>,
    /// Base weights and activations: f32, bf16 or f16 (LoRA matrices and the optimiser stay
    /// f32). bf16 on GPUs, and on CPUs with AVX-512 BF16 for LoRA (the frozen base weights in
    /// bf16, activations in f32); f16 on GPUs.
    #[arg(long)]
    pub precision: Option<doctune_api::train::Precision>,
    /// Threads for the computation (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `--dims H,L,A,KV,I,C`.
pub fn parse_dims(s: &str) -> Result<doctune_api::scratch::ScratchDims, ApiError> {
    let n: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::invalid(format!("--dims {s}: not six whole numbers")))?;
    let [hidden, layers, heads, kv_heads, intermediate, context] = n[..] else {
        return Err(ApiError::invalid(format!(
            "--dims {s}: give six numbers, HIDDEN,LAYERS,HEADS,KV_HEADS,INTERMEDIATE,CONTEXT"
        )));
    };
    Ok(doctune_api::scratch::ScratchDims {
        hidden,
        layers,
        heads,
        kv_heads,
        intermediate,
        context,
    })
}

impl TrainArgs {
    /// With --method scratch: the new model to make, with the run's dataset options.
    pub fn scratch(&self) -> Option<doctune_api::scratch::ScratchTrainRequest> {
        use doctune_api::scratch::{ScratchRequest, ScratchSize};
        if !matches!(self.method, Some(MethodArg::Scratch))
            && self.size.is_none()
            && self.dims.is_none()
        {
            return None;
        }
        let size = match self.size {
            Some(SizeArg::Small) => ScratchSize::Small,
            _ => ScratchSize::Tiny,
        };
        Some(doctune_api::scratch::ScratchTrainRequest {
            model: ScratchRequest {
                size,
                dims: self.dims.as_deref().and_then(|d| parse_dims(d).ok()),
                vocab_size: self.vocab_size,
                seed: self.seed.unwrap_or(0),
            },
            seq_len: self.seq_len,
            overrides: RunOverrides::default(),
        })
    }

    /// The preset named, if any.
    pub fn preset(&self) -> Option<Preset> {
        self.preset.map(|p| match p {
            PresetArg::Quick => Preset::Quick,
            PresetArg::Balanced => Preset::Balanced,
            PresetArg::Thorough => Preset::Thorough,
        })
    }

    /// The settings given on the command line, to apply over the preset or the defaults.
    pub fn overrides(&self) -> Result<RunOverrides, ApiError> {
        let targets = self
            .lora_targets
            .as_deref()
            .map(Target::parse_list)
            .transpose()?;
        Ok(RunOverrides {
            method: self.method.map(|m| match m {
                MethodArg::Lora => MethodKind::Lora,
                MethodArg::Full | MethodArg::Scratch => MethodKind::Full,
            }),
            lora_rank: self.lora_rank,
            lora_alpha: self.lora_alpha,
            lora_dropout: self.lora_dropout,
            lora_targets: targets,
            rslora: self.rslora.then_some(true),
            max_steps: self.steps,
            epochs: self.epochs,
            micro_batch: self.micro_batch,
            grad_accum: self.grad_accum,
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            schedule: None,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            eval_every: self.eval_every,
            checkpoint_every: self.checkpoint_every,
            gradient_checkpointing: self.gradient_checkpointing.then_some(true),
            device: self.device,
            precision: self.precision,
            seed: self.seed,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// List a project's runs with their last metrics.
    List {
        #[arg(long, value_name = "DIR")]
        project: String,
    },
    /// Register a LoRA adapter trained elsewhere (a bundle's output/, or any PEFT adapter
    /// folder) as a run of the project; checked against the base model.
    Import {
        #[arg(long, value_name = "DIR")]
        project: String,
        /// The trainer's output folder (with adapter/ and bundle.json), or an adapter folder.
        source: PathBuf,
        /// The base model (a library id or folder), when the bundle's is not on this machine.
        #[arg(long, value_name = "MODEL")]
        model: Option<String>,
    },
}

/// `doctune bundle`: a run's settings and where to write the bundle.
#[derive(clap::Args, Debug)]
pub struct BundleCli {
    #[command(flatten)]
    pub args: TrainArgs,
    /// The bundle folder to create.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Add DocTune's seeded LoRA initialisation (initial_adapter/), so the bundle's run starts
    /// where `doctune train` would (loads the base model once).
    #[arg(long)]
    pub initial_adapter: bool,
}

#[derive(Subcommand, Debug)]
pub enum DatasetCommand {
    /// Tokenise the project's extracted documents (pretrain), instruction files (instruct) or
    /// question-answer pairs made from the documents (qa) into datasets/<id>/ with the model's
    /// tokenizer and chat template.
    Build(DatasetBuildArgs),
    /// Write a question-answer dataset's pairs as JSONL (alpaca or OpenAI messages, each with
    /// its source) for review; build the edited file with `--mode instruct --input FILE`.
    ExportPairs {
        /// The dataset folder (a project's datasets/<id>).
        #[arg(long, value_name = "DIR")]
        dataset: PathBuf,
        /// alpaca or messages.
        #[arg(long, default_value = "messages")]
        format: doctune_api::dataset::PairFormat,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
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
pub enum ModeArg {
    Pretrain,
    Instruct,
    Qa,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LossArg {
    Assistant,
    All,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum BadRowArg {
    Skip,
    Stop,
}

#[derive(clap::Args, Debug)]
pub struct DatasetBuildArgs {
    /// The project: its folder, or its id or name.
    #[arg(long, value_name = "DIR")]
    pub project: String,
    /// The model whose tokenizer and chat template to use (a folder or a library id).
    #[arg(long, value_name = "MODEL_DIR")]
    pub model: String,
    #[arg(long, value_enum)]
    pub mode: ModeArg,
    /// An instruction file (JSONL, JSON or CSV/TSV; alpaca, prompt/completion, sharegpt,
    /// OpenAI messages or text rows). Repeat for several.
    #[arg(long = "input", value_name = "FILE")]
    pub inputs: Vec<PathBuf>,
    /// Tokens per example (longer conversations are cut; documents are packed into windows of
    /// this length).
    #[arg(long, default_value_t = BUILD_DEFAULTS.seq_len, value_name = "N")]
    pub seq_len: usize,
    /// Pretrain: tokens between window starts (default: seq-len, no overlap).
    #[arg(long, value_name = "N")]
    pub stride: Option<usize>,
    /// Pretrain: drop the last, shorter window.
    #[arg(long)]
    pub drop_last: bool,
    #[arg(long, default_value_t = BUILD_DEFAULTS.val_fraction, value_name = "F")]
    pub val_fraction: f64,
    #[arg(long, default_value_t = BUILD_DEFAULTS.seed)]
    pub seed: u64,
    /// Which tokens of a conversation carry loss.
    #[arg(long, value_enum, default_value = "assistant")]
    pub loss_on: LossArg,
    /// Skip bad rows (listed in the report) or stop at the first.
    #[arg(long, value_enum, default_value = "skip")]
    pub on_bad_row: BadRowArg,
    /// Keep exact duplicate examples.
    #[arg(long)]
    pub keep_duplicates: bool,
    /// Qa: who writes the pairs: an instruct model (a library id or a model folder), or
    /// `template` (questions from definitions and headings, no model).
    #[arg(long, value_name = "MODEL|template", default_value = "template")]
    pub generator: String,
    /// Qa: tokens per passage.
    #[arg(long, default_value_t = QA_DEFAULTS.passage_tokens, value_name = "N")]
    pub passage_tokens: usize,
    /// Qa: tokens repeated between consecutive passages of a section.
    #[arg(long, default_value_t = QA_DEFAULTS.overlap_tokens, value_name = "N")]
    pub passage_overlap: usize,
    /// Qa: pairs asked of the generator per passage.
    #[arg(long, default_value_t = QA_DEFAULTS.pairs_per_passage, value_name = "K")]
    pub pairs_per_passage: usize,
    /// Qa: the least share of an answer's content words found in its passage.
    #[arg(long, default_value_t = QA_DEFAULTS.min_support, value_name = "F")]
    pub min_support: f64,
    /// Qa: also ask the generator whether the passage supports each answer.
    #[arg(long)]
    pub check_support: bool,
    /// Qa: the longest reply per passage, in tokens.
    #[arg(long, default_value_t = QA_DEFAULTS.max_new_tokens, value_name = "N")]
    pub max_new_tokens: usize,
    /// Qa: where the generator runs (cpu, cuda, metal).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The run folder (a project's runs/<id>).
    #[arg(long, value_name = "RUN_DIR")]
    pub run: PathBuf,
    /// peft, merged, gguf, gguf-lora or ollama (gguf + Modelfile).
    #[arg(long)]
    pub format: doctune_api::export::Format,
    /// GGUF types: f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k or f32 (gguf-lora: f32, f16,
    /// bf16 or q8_0).
    #[arg(long, default_value_t = Default::default())]
    pub quant: doctune_api::export::Quant,
    /// The merged model's dtype: f32, bf16 or f16.
    #[arg(long, default_value_t = Default::default())]
    pub dtype: doctune_api::export::Dtype,
    /// Export this checkpoint's step instead of the final weights.
    #[arg(long, value_name = "STEP")]
    pub checkpoint: Option<u64>,
    /// The folder to create (default: the project's exports/<new id>/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A system message for the Modelfile.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Replace an existing export at --out.
    #[arg(long)]
    pub overwrite: bool,
}

impl ExportArgs {
    pub fn options(&self) -> doctune_api::export::ExportOptions {
        doctune_api::export::ExportOptions {
            format: self.format,
            quant: self.quant,
            dtype: self.dtype,
            checkpoint: self.checkpoint,
            system: self.system.clone(),
            overwrite: self.overwrite,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// A model folder (Hugging Face layout), or the id of a model in the library.
    #[arg(long, value_name = "DIR")]
    pub model: String,
    /// A PEFT LoRA adapter folder to apply.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    #[arg(long, value_name = "TEXT")]
    pub prompt: String,
    /// Render the prompt as a user turn with the model's chat template (and stop at the end of
    /// the reply).
    #[arg(long)]
    pub chat: bool,
    /// A system message (with --chat).
    #[arg(long, value_name = "TEXT", requires = "chat")]
    pub system: Option<String>,
    #[arg(long, default_value_t = doctune_api::generate::DEFAULT_MAX_NEW_TOKENS, value_name = "N")]
    pub max_new_tokens: usize,
    /// Always take the most likely token (the default unless --temperature is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    pub greedy: bool,
    /// Sample with this temperature (> 0).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Sample only among the K most likely tokens.
    #[arg(long, value_name = "K", requires = "temperature")]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to P.
    #[arg(long, value_name = "P", requires = "temperature")]
    pub top_p: Option<f32>,
    /// Above 1 discourages repeating tokens of the prompt and the output.
    #[arg(long, default_value_t = 1.0, value_name = "R")]
    pub repetition_penalty: f32,
    /// Seed of the sampler (same seed, same output).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or metal (the latter two need a build with that feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
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
pub enum ModelCommand {
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
pub enum ProjectCommand {
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

impl DatasetBuildArgs {
    /// The build request these flags describe.
    pub fn request(&self) -> doctune_api::DatasetRequest {
        doctune_api::DatasetRequest {
            model: self.model.clone(),
            inputs: self.inputs.clone(),
            options: BuildOptions {
                mode: match self.mode {
                    ModeArg::Pretrain => Mode::Pretrain,
                    ModeArg::Instruct => Mode::Instruct,
                    ModeArg::Qa => Mode::Qa,
                },
                seq_len: self.seq_len,
                stride: self.stride,
                keep_last_partial: !self.drop_last,
                val_fraction: self.val_fraction,
                seed: self.seed,
                loss_on: match self.loss_on {
                    LossArg::Assistant => LossOn::Assistant,
                    LossArg::All => LossOn::All,
                },
                on_bad_row: match self.on_bad_row {
                    BadRowArg::Skip => OnBadRow::Skip,
                    BadRowArg::Stop => OnBadRow::Stop,
                },
                dedup: !self.keep_duplicates,
                qa: QaOptions {
                    generator: match self.generator.as_str() {
                        "template" => Generator::Template,
                        m => Generator::Model { model: m.into() },
                    },
                    passage_tokens: self.passage_tokens,
                    overlap_tokens: self.passage_overlap,
                    pairs_per_passage: self.pairs_per_passage,
                    min_support: self.min_support,
                    model_check: self.check_support,
                    max_new_tokens: self.max_new_tokens,
                    device: self.device.clone(),
                    ..QaOptions::default()
                },
            },
        }
    }
}

impl GenerateArgs {
    /// The generation request these flags describe.
    pub fn request(&self) -> doctune_api::GenerateRequest {
        doctune_api::GenerateRequest {
            model: self.model.clone(),
            adapter: self.adapter.as_ref().map(|p| p.display().to_string()),
            prompt: self.prompt.clone(),
            chat: self.chat,
            system: self.system.clone(),
            max_new_tokens: self.max_new_tokens,
            sampling: doctune_api::generate::Sampling {
                temperature: if self.greedy { None } else { self.temperature },
                top_k: self.top_k,
                top_p: self.top_p,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
            },
            device: Some(self.device.clone()),
        }
    }
}
