//! DocTune's desktop shell. It owns the window, the menu, the capability set and the managed
//! state; every command in [`commands`] is a thin wrapper over `doctune-api`. There is no HTTP
//! server and no dev server: the UI is embedded and served over Tauri's custom protocol. Paths
//! the user drops or chooses are held in Rust as [`grants`]; the UI refers to them by id.

pub mod commands;
#[cfg(feature = "e2e")]
pub mod e2e;
pub mod grants;

use doctune_api::{Home, Jobs, SecretStore};
use std::sync::Arc;
use tauri::{Manager, Runtime};

/// What every command can reach.
pub struct AppState {
    pub home: Home,
    pub gpus: doctune_api::Gpus,
    pub jobs: Jobs,
    /// The OS keychain in the app; an in-memory store in tests.
    pub secrets: Arc<dyn SecretStore>,
    /// The model the Playground last used, kept loaded.
    pub models: doctune_api::ModelCache,
    /// Started with `--demo` (what `scripts/run` does with a display): the window starts the
    /// built-in demo and shows its run live.
    pub demo_at_launch: bool,
    /// The files and folders each window's user dropped or chose.
    pub grants: grants::Grants,
}

impl AppState {
    /// The app's state over `home`, with the OS keychain.
    pub fn new(home: Home) -> Self {
        Self {
            home,
            gpus: doctune_api::Gpus::init(),
            jobs: Jobs::default(),
            secrets: Arc::new(doctune_api::Keychain),
            models: Default::default(),
            demo_at_launch: false,
            grants: Default::default(),
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

/// The builder with DocTune's state, plugins, menu and commands, for any runtime (the real
/// webview, or the mock runtime in tests).
pub fn builder<R: Runtime>(state: AppState) -> tauri::Builder<R> {
    tauri::Builder::<R>::new()
        .plugin(tauri_plugin_dialog::init())
        .manage(state)
        .menu(tauri::menu::Menu::default)
        .on_window_event(|window, event| match event {
            // A drop is received here, in Rust: the paths become grants of this window and the
            // UI is sent their ids (the UI's own drag-drop listener only draws the drop zone).
            tauri::WindowEvent::DragDrop(tauri::DragDropEvent::Drop { paths, .. }) => {
                let state = window.state::<AppState>();
                grants::dropped(window, &state.grants, paths.clone());
            }
            tauri::WindowEvent::Destroyed => window
                .state::<AppState>()
                .grants
                .forget_window(window.label()),
            _ => {}
        })
        .setup(|_app| {
            #[cfg(feature = "e2e")]
            e2e::start(_app.handle());
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            commands::list_projects,
            commands::create_project,
            commands::open_project,
            commands::rename_project,
            commands::delete_project,
            commands::remove_document,
            commands::show_in_folder,
            commands::add_documents,
            commands::choose_documents,
            commands::doctor,
            commands::data_folder,
            commands::choose_data_folder,
            commands::get_preferences,
            commands::set_preferences,
            commands::token_status,
            commands::set_token,
            commands::delete_token,
            commands::test_token,
            commands::list_models,
            commands::model_fit,
            commands::start_pull,
            commands::cancel_job,
            commands::choose_model_folder,
            commands::import_model,
            commands::start_ingest,
            commands::document_preview,
            commands::start_generate,
            commands::start_dataset_build,
            commands::list_datasets,
            commands::dataset_preview,
            commands::start_training,
            commands::resume_training,
            commands::list_runs,
            commands::delete_run,
            commands::run_history,
            commands::train_settings,
            commands::train_presets,
            commands::list_instruction_documents,
            commands::dataset_defaults,
            commands::start_export,
            commands::list_exports,
            commands::export_estimate,
            commands::export_formats,
            commands::train_estimate,
            commands::start_demo,
            commands::launch_options,
        ])
}

/// The app's compiled-in configuration, embedded UI and capabilities, for any runtime.
pub fn context<R: Runtime>() -> tauri::Context<R> {
    tauri::generate_context!()
}

/// Starts the app.
pub fn run() {
    doctune_api::init_logging();
    let home = match Home::from_env() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("doctune: {e}");
            std::process::exit(1);
        }
    };
    let mut state = AppState::new(home);
    state.demo_at_launch = std::env::args().skip(1).any(|a| a == "--demo");
    builder::<tauri::Wry>(state)
        .run(context())
        .unwrap_or_else(|e| {
            eprintln!("doctune: the window could not start: {e}");
            std::process::exit(1);
        });
}
