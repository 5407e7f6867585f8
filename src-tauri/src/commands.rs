//! The commands the UI may call (each granted in `capabilities/main.json`). Each is a few lines:
//! resolve what the UI named through `doctune-api`, call the use case, return its result or
//! its `{ code, message }` error.

use crate::AppState;
use doctune_api::{
    projects, AddReport, ApiError, CancelToken, DoctorReport, JobEvent, Limits, Project,
    ProjectSummary,
};
use std::path::PathBuf;
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

/// What a drop on the window and the file dialog both end in: add these paths to project `id`.
#[tauri::command]
pub async fn add_documents(
    state: State<'_, AppState>,
    id: String,
    paths: Vec<PathBuf>,
    on_event: Channel<JobEvent>,
) -> Result<AddReport, ApiError> {
    let dir = projects::dir_of(&state.home, &id)?;
    let sink = move |e: JobEvent| {
        let _ = on_event.send(e);
    };
    tauri::async_runtime::spawn_blocking(move || {
        doctune_api::add_documents(&dir, &paths, &Limits::default(), &sink, &CancelToken::new())
    })
    .await
    .map_err(|e| {
        ApiError::new(
            doctune_api::Code::Internal,
            format!("adding documents stopped: {e}"),
        )
    })?
}

/// Opens the native file dialog; returns the chosen files (empty if the user cancelled).
#[tauri::command]
pub async fn choose_documents<R: tauri::Runtime>(
    app: tauri::AppHandle<R>,
) -> Result<Vec<PathBuf>, ApiError> {
    let picked = app
        .dialog()
        .file()
        .set_title("Add documents to the project")
        .blocking_pick_files()
        .unwrap_or_default();
    Ok(picked
        .into_iter()
        .filter_map(|p| p.into_path().ok())
        .collect())
}

#[tauri::command]
pub fn doctor(state: State<'_, AppState>) -> DoctorReport {
    doctune_api::doctor(&state.home, &state.gpus)
}
