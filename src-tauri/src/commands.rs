//! The commands the UI may call (each granted in `capabilities/main.json`). Each is a few lines:
//! resolve what the UI named through `doctune-api`, call the use case, return its result or
//! its `{ code, message }` error.

use crate::grants::GrantedPath;
use crate::AppState;
use doctune_api::dataset::{self, AppDatasetRequest};
use doctune_api::preferences::{self, Preferences};
use doctune_api::train::{self, AppTrainRequest};
use doctune_api::{
    generate, models, projects, token, AddReport, ApiError, CancelToken, DatasetSummary,
    DoctorReport, GenerateRequest, Home, JobEvent, JobId, Limits, ModelEntry, PreviewExample,
    Project, ProjectSummary, Sensitive, TokenStatus,
};
use std::path::PathBuf;
use std::sync::Arc;
use tauri::ipc::Channel;
use tauri::State;
use tauri_plugin_dialog::DialogExt;

#[tauri::command]
pub fn list_projects(state: State<'_, AppState>) -> Result<Vec<ProjectSummary>, ApiError> {
    projects::list(&state.home)
}

#[tauri::command]
pub fn create_project(
    state: State<'_, AppState>,
    name: String,
) -> Result<ProjectSummary, ApiError> {
    projects::create(&state.home, &name)
}

#[tauri::command]
pub fn open_project(state: State<'_, AppState>, id: String) -> Result<Project, ApiError> {
    projects::open(&projects::dir_of(&state.home, &id)?)
}

#[tauri::command]
pub fn rename_project(
    state: State<'_, AppState>,
    id: String,
    name: String,
) -> Result<ProjectSummary, ApiError> {
    projects::rename(&state.home, &id, &name)
}

/// Deletes a project (to the OS trash unless `how` says `permanent`); returns its name.
#[tauri::command]
pub fn delete_project(
    state: State<'_, AppState>,
    id: String,
    how: projects::Deletion,
) -> Result<String, ApiError> {
    projects::delete(&state.home, &id, how)
}

/// Removes one document (by sha256) from project `id`; returns the project as it is now.
#[tauri::command]
pub fn remove_document(
    state: State<'_, AppState>,
    id: String,
    sha256: String,
) -> Result<Project, ApiError> {
    let dir = projects::dir_of(&state.home, &id)?;
    doctune_api::remove_document(&dir, &sha256)?;
    projects::open(&dir)
}

/// Opens a folder of project `id` in the OS file manager. The UI names the folder; Rust
/// resolves it inside the project and opens it (the UI has no opener permission of its own).
#[tauri::command]
pub fn show_in_folder(
    state: State<'_, AppState>,
    id: String,
    folder: projects::Folder,
) -> Result<(), ApiError> {
    let path = projects::folder(&state.home, &id, &folder)?;
    open::that_detached(&path).map_err(|e| {
        ApiError::new(
            doctune_core::Code::Internal,
            format!("cannot open {} in the file manager: {e}", path.display()),
        )
    })
}

/// What a drop on the window and the file dialog both end in: add the granted files and folders
/// (`grants`, ids from a drop or a dialog of this window) to project `id`.
#[tauri::command]
pub async fn add_documents<R: tauri::Runtime>(
    window: tauri::Window<R>,
    state: State<'_, AppState>,
    id: String,
    grants: Vec<String>,
    on_event: Channel<JobEvent>,
) -> Result<AddReport, ApiError> {
    let paths = state.grants.resolve(window.label(), &grants)?;
    let dir = projects::dir_of(&state.home, &id)?;
    let sink = move |e: JobEvent| {
        let _ = on_event.send(e);
    };
    blocking(move || {
        doctune_api::add_documents(&dir, &paths, &Limits::default(), &sink, &CancelToken::new())
    })
    .await
}

/// Opens the native file dialog; returns grants of the chosen files (empty if the user
/// cancelled).
#[tauri::command]
pub async fn choose_documents<R: tauri::Runtime>(
    window: tauri::Window<R>,
    state: State<'_, AppState>,
) -> Result<Vec<GrantedPath>, ApiError> {
    let picked = match test_choice() {
        Some(p) => p,
        None => window
            .dialog()
            .file()
            .set_parent(&window)
            .set_title("Add documents to the project")
            .blocking_pick_files()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| p.into_path().ok())
            .collect(),
    };
    Ok(picked
        .into_iter()
        .map(|p| state.grants.grant(window.label(), p))
        .collect())
}

/// The e2e build's stand-in for a dialog's answer (see `e2e.rs`); none in every other build.
fn test_choice() -> Option<Vec<PathBuf>> {
    #[cfg(feature = "e2e")]
    return crate::e2e::next_choice();
    #[cfg(not(feature = "e2e"))]
    None
}

/// A folder the user picks in a native dialog over `window` (the e2e build's stand-in answers
/// instead); `None` when they cancel.
fn pick_folder<R: tauri::Runtime>(window: &tauri::Window<R>, title: &str) -> Option<PathBuf> {
    match test_choice() {
        Some(p) => p.into_iter().next(),
        None => window
            .dialog()
            .file()
            .set_parent(window)
            .set_title(title)
            .blocking_pick_folder()
            .and_then(|p| p.into_path().ok()),
    }
}

#[tauri::command]
pub fn doctor(state: State<'_, AppState>) -> DoctorReport {
    doctune_api::doctor(&state.home, &state.gpus)
}

/// Whether fine-tuning library model `model` fits this machine (LoRA and full).
#[tauri::command]
pub fn model_fit(state: State<'_, AppState>, model: String) -> Result<train::ModelFit, ApiError> {
    models::require_in_library(&state.home, &model)?;
    train::fit(&state.home, &model, &state.gpus.list())
}

/// The data folder in use, where it came from, and what the next start will use.
#[tauri::command]
pub fn data_folder(state: State<'_, AppState>) -> doctune_api::DataFolder {
    state.home.data_folder()
}

/// Asks for a folder (a native dialog, opened from Rust) and makes it the data folder from the
/// next start on; `reset` goes back to the OS default instead. Nothing is moved.
#[tauri::command]
pub async fn choose_data_folder<R: tauri::Runtime>(
    window: tauri::Window<R>,
    state: State<'_, AppState>,
    reset: bool,
) -> Result<doctune_api::DataFolder, ApiError> {
    if reset {
        Home::choose_for_next_start(None)?;
    } else {
        if let Some(folder) = pick_folder(&window, "Choose where DocTune keeps its data") {
            Home::choose_for_next_start(Some(&folder))?;
        }
    }
    Ok(state.home.data_folder())
}

/// The person's defaults (training device and precision).
#[tauri::command]
pub fn get_preferences(state: State<'_, AppState>) -> Result<Preferences, ApiError> {
    preferences::read(&state.home)
}

#[tauri::command]
pub fn set_preferences(state: State<'_, AppState>, prefs: Preferences) -> Result<(), ApiError> {
    preferences::write(&state.home, &prefs)
}

#[tauri::command]
pub fn token_status(state: State<'_, AppState>) -> TokenStatus {
    token::status(state.secrets.as_ref())
}

/// The token arrives over IPC once and is wrapped at once; it is never returned or logged.
#[tauri::command]
pub fn set_token(state: State<'_, AppState>, token: String) -> Result<(), ApiError> {
    token::set(state.secrets.as_ref(), Sensitive::new(token))
}

#[tauri::command]
pub fn delete_token(state: State<'_, AppState>) -> Result<(), ApiError> {
    token::delete(state.secrets.as_ref())
}

#[tauri::command]
pub async fn test_token(state: State<'_, AppState>) -> Result<String, ApiError> {
    let (home, secrets) = (state.home.clone(), state.secrets.clone());
    blocking(move || token::test(&home, secrets.as_ref())).await
}

#[tauri::command]
pub fn list_models(state: State<'_, AppState>) -> Result<Vec<ModelEntry>, ApiError> {
    models::list(&state.home)
}

/// Starts a pull; progress, then `finished`/`failed`/`cancelled`, arrive on `on_event`.
#[tauri::command]
pub fn start_pull(
    state: State<'_, AppState>,
    repo: String,
    revision: Option<String>,
    on_event: Channel<JobEvent>,
) -> JobId {
    let (home, secrets) = (state.home.clone(), state.secrets.clone());
    let sink = Arc::new(move |e: JobEvent| {
        let _ = on_event.send(e);
    });
    state.jobs.start("pull", sink, move |sink, cancel| {
        let rev = revision.unwrap_or_else(|| "main".into());
        models::pull(&home, secrets.as_ref(), &repo, &rev, sink, cancel)
    })
}

#[tauri::command]
pub fn cancel_job(state: State<'_, AppState>, id: JobId) -> bool {
    state.jobs.cancel(&id)
}

/// Opens the native folder dialog; returns a grant of the chosen folder, if any.
#[tauri::command]
pub async fn choose_model_folder<R: tauri::Runtime>(
    window: tauri::Window<R>,
    state: State<'_, AppState>,
) -> Result<Option<GrantedPath>, ApiError> {
    let picked = pick_folder(&window, "Import a model folder");
    Ok(picked.map(|p| state.grants.grant(window.label(), p)))
}

/// Imports the model folder behind `grant` (from `choose_model_folder` or a drop on this window).
#[tauri::command]
pub async fn import_model<R: tauri::Runtime>(
    window: tauri::Window<R>,
    state: State<'_, AppState>,
    grant: String,
    copy: bool,
) -> Result<ModelEntry, ApiError> {
    let path = state
        .grants
        .resolve(window.label(), std::slice::from_ref(&grant))?
        .remove(0);
    let home = state.home.clone();
    blocking(move || models::import(&home, &path, copy)).await
}

/// Starts generating with a library model; text pieces, then `generated` and
/// `finished`/`failed`/`cancelled`, arrive on `on_event`. Cancel with `cancel_job`.
#[tauri::command]
pub fn start_generate(
    state: State<'_, AppState>,
    request: GenerateRequest,
    on_event: Channel<JobEvent>,
) -> Result<JobId, ApiError> {
    let request = generate::confine_to_library(&state.home, request)?;
    let (home, cache) = (state.home.clone(), state.models.clone());
    let sink = Arc::new(move |e: JobEvent| {
        let _ = on_event.send(e);
    });
    Ok(state.jobs.start("generate", sink, move |sink, cancel| {
        generate::generate(&home, &cache, &request, sink, cancel)
    }))
}

/// Starts building a dataset in project `id`; progress, then `finished`/`failed`/`cancelled`.
#[tauri::command]
pub fn start_dataset_build(
    state: State<'_, AppState>,
    id: String,
    request: AppDatasetRequest,
    on_event: Channel<JobEvent>,
) -> Result<JobId, ApiError> {
    let dir = projects::dir_of(&state.home, &id)?;
    let request = request.resolve(&state.home, &dir)?;
    let home = state.home.clone();
    let sink = Arc::new(move |e: JobEvent| {
        let _ = on_event.send(e);
    });
    Ok(state.jobs.start("dataset", sink, move |sink, cancel| {
        dataset::build(&home, &dir, &request, sink, cancel)
    }))
}

#[tauri::command]
pub fn list_datasets(
    state: State<'_, AppState>,
    id: String,
) -> Result<Vec<DatasetSummary>, ApiError> {
    dataset::list(&projects::dir_of(&state.home, &id)?)
}

#[tauri::command]
pub fn dataset_preview(
    state: State<'_, AppState>,
    id: String,
    dataset: String,
    n: usize,
) -> Result<Vec<PreviewExample>, ApiError> {
    let dir = projects::dir_of(&state.home, &id)?;
    dataset::preview(&dataset::dir_of(&dir, &dataset)?, n)
}

/// Starts a training run in project `id`; metrics, checkpoints, then
/// `finished`/`failed`/`cancelled` arrive on `on_event`. Pausing is `cancel_job`: the run stops
/// at the next step with a checkpoint and can be resumed.
#[tauri::command]
pub fn start_training(
    state: State<'_, AppState>,
    id: String,
    request: AppTrainRequest,
    on_event: Channel<JobEvent>,
) -> Result<JobId, ApiError> {
    let dir = projects::dir_of(&state.home, &id)?;
    let config = request.resolve(&state.home, &dir, &state.gpus.list())?;
    let home = state.home.clone();
    let sink = Arc::new(move |e: JobEvent| {
        let _ = on_event.send(e);
    });
    Ok(state.jobs.start("train", sink, move |sink, cancel| {
        train::start(&home, &dir, config, sink, cancel, &mut |_| {})
    }))
}

/// Resumes run `run` of project `id` from its newest checkpoint.
#[tauri::command]
pub fn resume_training(
    state: State<'_, AppState>,
    id: String,
    run: String,
    on_event: Channel<JobEvent>,
) -> Result<JobId, ApiError> {
    let dir = train::run_dir(&projects::dir_of(&state.home, &id)?, &run)?;
    let sink = Arc::new(move |e: JobEvent| {
        let _ = on_event.send(e);
    });
    Ok(state.jobs.start("train", sink, move |sink, cancel| {
        train::resume(&dir, sink, cancel)
    }))
}

/// Deletes run `run` of project `id` (to the OS trash unless `how` says `permanent`).
#[tauri::command]
pub fn delete_run(
    state: State<'_, AppState>,
    id: String,
    run: String,
    how: projects::Deletion,
) -> Result<(), ApiError> {
    train::delete_run(&projects::dir_of(&state.home, &id)?, &run, how)
}

#[tauri::command]
pub fn list_runs(state: State<'_, AppState>, id: String) -> Result<Vec<train::RunInfo>, ApiError> {
    train::list(&projects::dir_of(&state.home, &id)?)
}

#[tauri::command]
pub fn run_history(
    state: State<'_, AppState>,
    id: String,
    run: String,
) -> Result<Vec<train::MetricsLine>, ApiError> {
    train::history(&train::run_dir(&projects::dir_of(&state.home, &id)?, &run)?)
}

/// The memory estimate of a run the Train view is about to start.
#[tauri::command]
pub fn train_estimate(
    state: State<'_, AppState>,
    id: String,
    request: AppTrainRequest,
) -> Result<train::EstimateReport, ApiError> {
    let dir = projects::dir_of(&state.home, &id)?;
    train::estimate(&request.resolve(&state.home, &dir, &state.gpus.list())?)
}

/// The settings a run of `request` would use (defaults or the preset, with the person's
/// choices applied by the same rules the CLI uses): what the Train view shows.
#[tauri::command]
pub fn train_settings(
    state: State<'_, AppState>,
    id: String,
    request: AppTrainRequest,
) -> Result<train::RunConfig, ApiError> {
    request.resolve(
        &state.home,
        &projects::dir_of(&state.home, &id)?,
        &state.gpus.list(),
    )
}

/// The training presets, with their labels and what each does.
#[tauri::command]
pub fn train_presets() -> Vec<train::PresetInfo> {
    train::presets()
}

/// The dataset builder's defaults (`BuildOptions::default`), which the Dataset view starts from.
#[tauri::command]
pub fn dataset_defaults() -> dataset::BuildOptions {
    dataset::BuildOptions::default()
}

/// The project's documents an instruction dataset can be built from.
#[tauri::command]
pub fn list_instruction_documents(
    state: State<'_, AppState>,
    id: String,
) -> Result<Vec<doctune_api::DocumentEntry>, ApiError> {
    dataset::instruction_documents(&projects::dir_of(&state.home, &id)?)
}

/// Starts exporting run `run` of project `id` into the project's `exports/`; progress, then
/// `finished` with the export's report (its files, sizes, sha256, warnings).
#[tauri::command]
pub fn start_export(
    state: State<'_, AppState>,
    id: String,
    run: String,
    options: doctune_api::export::ExportOptions,
    on_event: Channel<JobEvent>,
) -> Result<JobId, ApiError> {
    let dir = train::run_dir(&projects::dir_of(&state.home, &id)?, &run)?;
    let home = state.home.clone();
    let sink = Arc::new(move |e: JobEvent| {
        let _ = on_event.send(e);
    });
    Ok(state.jobs.start("export", sink, move |sink, cancel| {
        doctune_api::export::export(&home, &dir, &options, None, sink, cancel)
    }))
}

/// The export formats with the GGUF types and dtypes each takes.
#[tauri::command]
pub fn export_formats() -> Vec<doctune_api::export::FormatInfo> {
    doctune_api::export::formats()
}

/// The expected size of exporting run `run` of project `id` with `options`.
#[tauri::command]
pub fn export_estimate(
    state: State<'_, AppState>,
    id: String,
    run: String,
    options: doctune_api::export::ExportOptions,
) -> Result<doctune_api::export::ExportEstimate, ApiError> {
    let dir = train::run_dir(&projects::dir_of(&state.home, &id)?, &run)?;
    doctune_api::export::estimate(&dir, &options)
}

#[tauri::command]
pub fn list_exports(
    state: State<'_, AppState>,
    id: String,
) -> Result<Vec<doctune_api::export::ExportInfo>, ApiError> {
    doctune_api::export::list(&projects::dir_of(&state.home, &id)?)
}

/// Starts extracting the text of project `id`'s documents not extracted yet.
#[tauri::command]
pub fn start_ingest(
    state: State<'_, AppState>,
    id: String,
    on_event: Channel<JobEvent>,
) -> Result<JobId, ApiError> {
    let dir = projects::dir_of(&state.home, &id)?;
    let sink = Arc::new(move |e: JobEvent| {
        let _ = on_event.send(e);
    });
    Ok(state.jobs.start("ingest", sink, move |sink, cancel| {
        doctune_api::ingest::ingest(&dir, None, &Default::default(), sink, cancel)
    }))
}

#[tauri::command]
pub fn document_preview(
    state: State<'_, AppState>,
    id: String,
    sha256: String,
) -> Result<doctune_api::ingest::Preview, ApiError> {
    doctune_api::ingest::preview(&projects::dir_of(&state.home, &id)?, &sha256, 4000)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tauri::async_runtime::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            doctune_api::Code::Internal,
            format!("the task stopped: {e}"),
        )
    })?
}

/// Runs the built-in demo (`doctune_api::demo`) as a job: its stages, the run's metrics, and
/// its report as the result. The demo writes only under DocTune's own data folder.
#[tauri::command]
pub fn start_demo(
    state: State<'_, AppState>,
    on_event: Channel<JobEvent>,
) -> Result<JobId, ApiError> {
    let home = state.home.clone();
    let sink = Arc::new(move |e: JobEvent| {
        let _ = on_event.send(e);
    });
    Ok(state.jobs.start("demo", sink, move |sink, cancel| {
        doctune_api::demo::run(
            &home,
            &doctune_api::demo::DemoOptions::default(),
            sink,
            cancel,
            &mut |_| {},
        )
    }))
}

/// How the window was started.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchOptions {
    /// Start the demo now (`--demo`).
    pub demo: bool,
}

#[tauri::command]
pub fn launch_options(state: State<'_, AppState>) -> LaunchOptions {
    LaunchOptions {
        demo: state.demo_at_launch,
    }
}
