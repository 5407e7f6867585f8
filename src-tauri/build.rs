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
            "token_status",
            "set_token",
            "delete_token",
            "test_token",
            "list_models",
            "start_pull",
            "cancel_job",
            "choose_model_folder",
            "import_model",
            "start_ingest",
            "document_preview",
            "start_generate",
            "start_dataset_build",
            "list_datasets",
            "dataset_preview",
            "start_training",
            "resume_training",
            "list_runs",
            "run_history",
            "train_settings",
            "list_instruction_documents",
            "dataset_defaults",
            "start_export",
            "list_exports",
            "train_estimate",
            "start_demo",
            "launch_options",
        ]),
    ))
    .expect("tauri-build failed");
}
