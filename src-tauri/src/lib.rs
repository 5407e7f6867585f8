//! DocTune's desktop shell. It owns the window, the menu, the capability set and the managed
//! state; every command in [`commands`] is a thin wrapper over `doctune-api`. There is no HTTP
//! server and no dev server: the UI is embedded and served over Tauri's custom protocol.

pub mod commands;

use doctune_api::Home;
use tauri::Runtime;

/// What every command can reach.
#[derive(Debug)]
pub struct AppState {
    pub home: Home,
    pub gpus: doctune_gpu::Gpus,
}

/// The builder with DocTune's state, plugins, menu and commands, for any runtime (the real
/// webview, or the mock runtime in tests).
pub fn builder<R: Runtime>(state: AppState) -> tauri::Builder<R> {
    tauri::Builder::<R>::new()
        .plugin(tauri_plugin_dialog::init())
        .manage(state)
        .menu(tauri::menu::Menu::default)
        .invoke_handler(tauri::generate_handler![
            commands::list_projects,
            commands::create_project,
            commands::open_project,
            commands::add_documents,
            commands::choose_documents,
            commands::doctor,
        ])
}

/// The app's compiled-in configuration, embedded UI and capabilities, for any runtime.
pub fn context<R: Runtime>() -> tauri::Context<R> {
    tauri::generate_context!()
}

/// Starts the app.
pub fn run() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DOCTUNE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let home = match Home::from_env() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("doctune: {e}");
            std::process::exit(1);
        }
    };
    let state = AppState {
        home,
        gpus: doctune_gpu::Gpus::init(),
    };
    builder::<tauri::Wry>(state)
        .run(context())
        .unwrap_or_else(|e| {
            eprintln!("doctune: the window could not start: {e}");
            std::process::exit(1);
        });
}
