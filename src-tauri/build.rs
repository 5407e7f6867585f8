//! Declares every app command as a permission (`allow-<command>`), so that a capability must grant
//! it explicitly before the UI can call it.

fn main() {
    tauri_build::try_build(tauri_build::Attributes::new().app_manifest(
        tauri_build::AppManifest::new().commands(&[
            "list_projects",
            "create_project",
            "open_project",
            "add_documents",
            "choose_documents",
            "doctor",
        ]),
    ))
    .expect("tauri-build failed");
}
