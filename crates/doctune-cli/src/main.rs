//! `doctune`: DocTune from the command line. Every subcommand calls the same `doctune-api` use
//! case as the desktop app; `--json` prints machine-readable output (camelCase, the API's own
//! types); any error exits non-zero with one line that names the file and the problem.
//!
//! `args.rs` is the grammar, `print.rs` what people see, `term.rs` keeps what a file controls
//! from acting on the terminal; this file only dispatches.

#[macro_use]
mod term;
mod args;
mod print;

use args::{
    Cli, Command, DatasetCommand, ModelCommand, ProjectCommand, RunsCommand, TokenCommand,
    TrainCli, TrainSub,
};
use clap::Parser;
use doctune_api::{projects, ApiError, Home, Limits};
use doctune_core::{CancelToken, JobEvent, NullSink, ProgressSink};
use std::process::ExitCode;

fn main() -> ExitCode {
    doctune_api::serve_worker_if_asked();
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

/// Prints `value` as JSON with `--json`, else as `text` shows it.
fn show<T: serde::Serialize>(cli: &Cli, value: &T, text: impl FnOnce(&T)) -> Result<(), ApiError> {
    if cli.json {
        print::json(value)
    } else {
        text(value);
        Ok(())
    }
}

fn code(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn home(cli: &Cli) -> Result<Home, ApiError> {
    match &cli.home {
        Some(h) => Ok(Home::at(h)),
        None => Home::from_env(),
    }
}

fn run(cli: &Cli) -> Result<ExitCode, ApiError> {
    let home = home(cli)?;
    let cancel = CancelToken::new();
    match &cli.command {
        Command::Project { command } => match command {
            ProjectCommand::New { name } => show(cli, &projects::create(&home, name)?, |p| {
                println!("created project \"{}\" in {}", p.name, p.path)
            })?,
            ProjectCommand::List => show(cli, &projects::list(&home)?, |l| print::projects(l))?,
            ProjectCommand::Show { project } => show(
                cli,
                &projects::open(&projects::locate(&home, project)?)?,
                print::project,
            )?,
        },
        Command::Add { project, files } => {
            let dir = projects::locate(&home, project)?;
            let report =
                doctune_api::add_documents(&dir, files, &Limits::default(), &NullSink, &cancel)?;
            show(cli, &report, print::add_report)?;
            if !cli.json {
                print::add_failures(&report);
            }
            return Ok(code(!report.failed.is_empty()));
        }
        Command::Ingest { project, files } => {
            use doctune_api::ingest;
            let dir = projects::locate(&home, project)?;
            let limits = ingest::IngestLimits::default();
            let (add_failed, report) = if files.is_empty() {
                (
                    false,
                    ingest::ingest(&dir, None, &limits, &NullSink, &cancel)?,
                )
            } else {
                let r = ingest::add_and_ingest(
                    &dir,
                    files,
                    &Limits::default(),
                    &limits,
                    &NullSink,
                    &cancel,
                )?;
                (print::add_failures(&r.added), r.ingested)
            };
            show(cli, &report.records, |_| print::ingest_report(&report))?;
            let extract_failed = print::ingest_failures(&report);
            return Ok(code(add_failed || extract_failed));
        }
        Command::Doctor => show(
            cli,
            &doctune_api::doctor(&home, &doctune_api::Gpus::init()),
            print::doctor,
        )?,
        Command::Token { command } => return token(cli, &home, command),
        Command::Model { command } => model(cli, &home, command)?,
        Command::Generate(a) => {
            use std::io::Write;
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
            let out = doctune_api::generate::generate(&home, &cache, &a.request(), &sink, &cancel)?;
            show(cli, &out, print::generated)?;
        }
        Command::Dataset { command } => dataset(cli, &home, command)?,
        Command::Export(a) => {
            let sink: Box<dyn ProgressSink> = if cli.json {
                Box::new(NullSink)
            } else {
                Box::new(print::StderrProgress(doctune_core::Throttle::per_second(2)))
            };
            let report = doctune_api::export::export(
                &home,
                &a.run,
                &a.options(),
                a.out.clone(),
                sink.as_ref(),
                &cancel,
            )?;
            show(cli, &report, print::export_report)?;
        }
        Command::Train(t) => train(cli, &home, t)?,
        Command::Demo(a) => demo(cli, a)?,
        Command::Runs {
            command: RunsCommand::List { project },
        } => {
            let dir = projects::locate(&home, project)?;
            show(cli, &doctune_api::train::list(&dir)?, |r| print::runs(r))?
        }
        Command::Runs {
            command:
                RunsCommand::Import {
                    project,
                    source,
                    model,
                },
        } => {
            let dir = projects::locate(&home, project)?;
            let run = doctune_api::bundle::import_run(&home, &dir, source, model.as_deref())?;
            show(cli, &run, |r| {
                println!(
                    "imported run {} ({}) into {}",
                    r.id,
                    r.imported_from.as_deref().unwrap_or_default(),
                    dir.join("runs").join(&r.id).display()
                )
            })?
        }
        Command::Bundle(b) => bundle(cli, &home, b)?,
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

fn train(cli: &Cli, home: &Home, t: &TrainCli) -> Result<(), ApiError> {
    use doctune_api::train;
    let json = cli.json;
    // Text: progress lines on stderr. JSON: one object per line on stdout as training goes.
    let sink = move |e: JobEvent| print::train_event(json, e);
    let summary = match (&t.resume, &t.args) {
        (Some(TrainSub::Resume { run_dir, threads }), _) => {
            set_threads(*threads);
            train::resume(run_dir, &sink, &CancelToken::new())?
        }
        (None, Some(a)) if a.scratch().is_some() => {
            if let Some(d) = &a.dims {
                crate::args::parse_dims(d)?;
            }
            set_threads(a.threads);
            let dir = projects::locate(home, a.project.as_deref().unwrap_or_default())?;
            let mut req = a.scratch().unwrap_or_default();
            req.overrides = a.overrides()?;
            let mut started = |p: &std::path::Path| print_run_dir(json, p);
            doctune_api::scratch::train(home, &dir, &req, &sink, &CancelToken::new(), &mut started)?
        }
        (None, Some(a)) => {
            if a.vocab_size.is_some() || a.seq_len.is_some() {
                return Err(ApiError::invalid(
                    "--vocab-size, --seq-len and --dims are settings of --method scratch",
                ));
            }
            set_threads(a.threads);
            let dir = projects::locate(home, a.project.as_deref().unwrap_or_default())?;
            let (Some(model), Some(dataset)) = (&a.model, &a.dataset) else {
                return Err(ApiError::invalid(
                    "give --model and --dataset (or --method scratch to make a new model)",
                ));
            };
            let dataset = train::resolve_dataset(&dir, dataset)?;
            // --device/--precision, else the preferences the app saved, else the best device.
            let mut overrides = a.overrides()?;
            let gpus = doctune_api::Gpus::init().list();
            doctune_api::preferences::apply(home, &gpus, &mut overrides);
            let mut config = train::settings(&dataset, a.preset(), &overrides)?;
            config.base_model = model.into();
            let mut started = |p: &std::path::Path| print_run_dir(json, p);
            train::start(home, &dir, config, &sink, &CancelToken::new(), &mut started)?
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
        print::run_summary(&summary);
    }
    Ok(())
}

/// A new run's folder, as soon as it exists.
fn print_run_dir(json: bool, p: &std::path::Path) {
    if json {
        println!("{}", serde_json::json!({ "runDir": p }));
    } else {
        println!("{}", p.display());
    }
}

fn demo(cli: &Cli, a: &crate::args::DemoArgs) -> Result<(), ApiError> {
    set_threads(a.threads);
    let home = match &a.out {
        Some(out) => Home::at(out),
        None => home(cli)?,
    };
    let json = cli.json;
    let sink = move |e: JobEvent| print::demo_event(json, e);
    let opts = doctune_api::demo::DemoOptions {
        steps: a.steps,
        prompt: a.prompt.clone(),
        ..Default::default()
    };
    let mut on_run = |_: &std::path::Path| {};
    let report = doctune_api::demo::run(&home, &opts, &sink, &CancelToken::new(), &mut on_run)?;
    if json {
        // One line, after the event lines, as `train --json` ends.
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print::demo_report(&report);
    }
    Ok(())
}

fn bundle(cli: &Cli, home: &Home, b: &crate::args::BundleCli) -> Result<(), ApiError> {
    let a = &b.args;
    if a.scratch().is_some() {
        return Err(ApiError::invalid(
            "a bundle trains an existing model: give --model and --dataset (not --method scratch)",
        ));
    }
    let dir = projects::locate(home, a.project.as_deref().unwrap_or_default())?;
    let (Some(model), Some(dataset)) = (&a.model, &a.dataset) else {
        return Err(ApiError::invalid("give --model and --dataset"));
    };
    let dataset = doctune_api::train::resolve_dataset(&dir, dataset)?;
    let mut config = doctune_api::train::settings(&dataset, a.preset(), &a.overrides()?)?;
    config.base_model = model.into();
    let report = doctune_api::bundle::bundle(
        home,
        &dir,
        config,
        &b.out,
        b.initial_adapter,
        &print::warnings,
        &CancelToken::new(),
    )?;
    show(cli, &report, |r| {
        println!(
            "wrote bundle {} in {}: {} training and {} validation examples, {} steps, {} files",
            r.id,
            r.dir,
            r.train_examples,
            r.val_examples,
            r.steps,
            r.files.len()
        );
        println!(
            "  run it there: cd {} && torchrun --nproc_per_node=N train.py (see README.md)",
            r.dir
        );
    })
}

fn dataset(cli: &Cli, home: &Home, command: &DatasetCommand) -> Result<(), ApiError> {
    use doctune_api::dataset;
    match command {
        DatasetCommand::Build(a) => {
            let dir = projects::locate(home, &a.project)?;
            let ds = dataset::build(
                home,
                &dir,
                &a.request(),
                &print::DatasetProgress(doctune_core::Throttle::per_second(1)),
                &CancelToken::new(),
            )?;
            show(cli, &ds, print::dataset_built)
        }
        DatasetCommand::ExportPairs {
            dataset: d,
            format,
            out,
        } => {
            let n = dataset::export_pairs(d, *format, out)?;
            show(
                cli,
                &serde_json::json!({"pairs": n, "path": out.display().to_string()}),
                |_| println!("wrote {n} pairs to {}", out.display()),
            )
        }
        DatasetCommand::Preview { dataset: d, n } => {
            show(cli, &dataset::preview(d, *n)?, |e| print::preview(e))
        }
        DatasetCommand::List { project } => {
            let dir = projects::locate(home, project)?;
            show(cli, &dataset::list(&dir)?, |l| print::datasets(l))
        }
    }
}

fn token(cli: &Cli, home: &Home, command: &TokenCommand) -> Result<ExitCode, ApiError> {
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
            show(cli, &serde_json::json!({"stored": true}), |_| {
                println!("token stored in the OS keychain")
            })?;
        }
        TokenCommand::Status => {
            let st = token::status(&store);
            show(cli, &st, print::token_status)?;
            return Ok(code(st.problem.is_some()));
        }
        TokenCommand::Delete => {
            token::delete(&store)?;
            show(cli, &serde_json::json!({"stored": false}), |_| {
                println!("token deleted")
            })?;
        }
        TokenCommand::Test => {
            let name = token::test(home, &store)?;
            show(cli, &serde_json::json!({"name": name}), |_| {
                println!("the token belongs to {name}")
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn model(cli: &Cli, home: &Home, command: &ModelCommand) -> Result<(), ApiError> {
    use doctune_api::models;
    match command {
        ModelCommand::Pull { repo, revision } => {
            let sink: Box<dyn ProgressSink> = if cli.json {
                Box::new(NullSink)
            } else {
                Box::new(print::StderrProgress(doctune_core::Throttle::per_second(1)))
            };
            let m = models::pull(
                home,
                &doctune_api::Keychain,
                repo,
                revision,
                sink.as_ref(),
                &CancelToken::new(),
            )?;
            show(cli, &m, print::model)
        }
        ModelCommand::Import { dir, copy } => {
            show(cli, &models::import(home, dir, *copy)?, print::model)
        }
        ModelCommand::List => show(cli, &models::list(home)?, |list| {
            if list.is_empty() {
                println!(
                    "no models yet; `doctune model pull ORG/NAME` or `doctune model import DIR`"
                );
            }
            list.iter().for_each(print::model);
        }),
    }
}
