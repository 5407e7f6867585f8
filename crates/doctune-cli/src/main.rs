//! `doctune`: DocTune from the command line. Every subcommand calls the same `doctune-api` use
//! case as the desktop app; `--json` prints machine-readable output; any error exits non-zero
//! with one line that names the file and the problem.

use clap::{Parser, Subcommand};
use doctune_api::{projects, AddReport, ApiError, Home, Limits};
use doctune_core::{CancelToken, NullSink};
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
    /// Show what this machine offers: OS, CPU, RAM, disk, GPU, keychain.
    Doctor,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DOCTUNE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
                            doctune_api::documents::human_bytes(d.size_bytes),
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

fn print_add_report(r: &AddReport) {
    use doctune_api::documents::human_bytes;
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
    use doctune_api::documents::human_bytes;
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
