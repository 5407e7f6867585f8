//! DocTune desktop app entry point.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    // Before anything of Tauri starts: a worker runs its one job and exits.
    doctune_api::serve_worker_if_asked();
    doctune_app::run();
}
