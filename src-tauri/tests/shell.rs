//! The desktop shell without a window: commands over the real IPC path (mock runtime, the real
//! capabilities and ACL), and the security settings of the config and capability files.

use doctune_testkit::hub as support;

use doctune_api::{Home, Jobs, MemoryStore};
use doctune_app::AppState;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{get_ipc_response, MockRuntime};
use tauri::webview::InvokeRequest;
use tauri::Manager;

/// This crate's folder, read when the test runs (see the other crates' `crate_dir`).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

fn read_json(rel: &str) -> Value {
    let p = format!("{}/{rel}", manifest_dir());
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn app(home: &std::path::Path) -> (tauri::App<MockRuntime>, tauri::WebviewWindow<MockRuntime>) {
    let state = AppState {
        home: Home::at(home),
        gpus: doctune_api::Gpus::init(),
        jobs: Jobs::default(),
        secrets: Arc::new(MemoryStore::default()),
        models: Default::default(),
        demo_at_launch: false,
        grants: Default::default(),
    };
    let app = doctune_app::builder::<MockRuntime>(state)
        .build(doctune_app::context())
        .unwrap();
    let w = tauri::WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    (app, w)
}

fn invoke(w: &tauri::WebviewWindow<MockRuntime>, cmd: &str, body: Value) -> Result<Value, Value> {
    get_ipc_response(
        w,
        InvokeRequest {
            cmd: cmd.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::Json(body),
            headers: Default::default(),
            invoke_key: w.app_handle().invoke_key().to_string(),
        },
    )
    .map(|b| b.deserialize::<Value>().unwrap())
}

#[test]
fn commands_work_over_ipc_and_errors_have_the_wire_shape() {
    let d = tempfile::tempdir().unwrap();
    let (_app, w) = app(d.path());
    assert_eq!(invoke(&w, "list_projects", json!({})).unwrap(), json!([]));
    let p = invoke(&w, "create_project", json!({"name": "Notes"})).unwrap();
    assert_eq!(p["id"], "notes");
    let opened = invoke(&w, "open_project", json!({"id": "notes"})).unwrap();
    assert_eq!(opened["name"], "Notes");
    assert_eq!(opened["documents"], json!([]));
    // A project id that tries to leave the projects folder.
    let err = invoke(&w, "open_project", json!({"id": "../../etc"})).unwrap_err();
    assert_eq!(err["code"], "invalidInput", "{err}");
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("not a project id"));
    let err = invoke(&w, "create_project", json!({"name": "notes"})).unwrap_err();
    assert_eq!(err["code"], "alreadyExists");
    let doctor = invoke(&w, "doctor", json!({})).unwrap();
    assert!(doctor["system"]["logicalCores"].as_u64().unwrap() >= 1);

    // The data folder in use: the test's, named as such.
    let folder = invoke(&w, "data_folder", json!({})).unwrap();
    assert_eq!(folder["path"], d.path().display().to_string(), "{folder}");

    // Presets and preferences: Rust's, with their rules.
    let presets = invoke(&w, "train_presets", json!({})).unwrap();
    assert_eq!(presets[0]["preset"], "quick");
    assert_eq!(presets.as_array().unwrap().len(), 3);
    assert_eq!(
        invoke(&w, "get_preferences", json!({})).unwrap(),
        json!({"device": null, "precision": null})
    );
    invoke(
        &w,
        "set_preferences",
        json!({"prefs": {"device": "cpu", "precision": "f32"}}),
    )
    .unwrap();
    assert_eq!(
        invoke(&w, "get_preferences", json!({})).unwrap()["device"],
        "cpu"
    );
    let err = invoke(
        &w,
        "set_preferences",
        // f16 is never offered on the CPU (bf16 is, where the CPU has AVX-512 BF16).
        json!({"prefs": {"device": "cpu", "precision": "f16"}}),
    )
    .unwrap_err();
    assert_eq!(err["code"], "invalidInput", "{err}");

    // Rename keeps the id; remove_document names the missing document; delete takes its mode
    // from the wire (`trash` / `permanent`).
    let r = invoke(
        &w,
        "rename_project",
        json!({"id": "notes", "name": "Field notes"}),
    )
    .unwrap();
    assert_eq!(
        (r["id"].as_str(), r["name"].as_str()),
        (Some("notes"), Some("Field notes"))
    );
    let sha = "0".repeat(64);
    let err = invoke(&w, "remove_document", json!({"id": "notes", "sha256": sha})).unwrap_err();
    assert_eq!(err["code"], "notFound", "{err}");
    let err = invoke(
        &w,
        "show_in_folder",
        json!({"id": "notes", "folder": {"kind": "run", "id": "../x"}}),
    )
    .unwrap_err();
    assert_eq!(err["code"], "invalidInput", "{err}");
    let err = invoke(&w, "delete_project", json!({"id": "notes", "how": "shred"})).unwrap_err();
    assert!(err.to_string().contains("shred"), "{err}");
    let name = invoke(
        &w,
        "delete_project",
        json!({"id": "notes", "how": "permanent"}),
    )
    .unwrap();
    assert_eq!(name, "Field notes");
    assert_eq!(invoke(&w, "list_projects", json!({})).unwrap(), json!([]));
}

#[test]
fn token_and_model_commands_over_ipc() {
    let d = tempfile::tempdir().unwrap();
    let (_app, w) = app(d.path());
    assert_eq!(
        invoke(&w, "token_status", json!({})).unwrap(),
        json!({"stored": false, "problem": null})
    );
    let r = invoke(&w, "set_token", json!({"token": "hf_ipcSECRET"})).unwrap();
    assert_eq!(r, Value::Null, "nothing of the token comes back");
    assert_eq!(
        invoke(&w, "token_status", json!({})).unwrap()["stored"],
        true
    );
    let err = invoke(&w, "set_token", json!({"token": "not a token"})).unwrap_err();
    assert_eq!(err["code"], "invalidInput");
    invoke(&w, "delete_token", json!({})).unwrap();
    assert_eq!(
        invoke(&w, "token_status", json!({})).unwrap()["stored"],
        false
    );

    assert_eq!(invoke(&w, "list_models", json!({})).unwrap(), json!([]));
    let folder = d.path().join("tiny");
    support::write_folder(&folder, &support::tiny_llama(1));
    let m = invoke(
        &w,
        "import_model",
        json!({"grant": grant(&w, &folder), "copy": false}),
    )
    .unwrap();
    assert_eq!(m["family"], "llama");
    assert_eq!(m["source"]["kind"], "local");
    assert_eq!(
        invoke(&w, "list_models", json!({}))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Whether it fits: a tiny model fits this machine both ways, on the CPU here.
    let fit = invoke(&w, "model_fit", json!({"model": m["id"]})).unwrap();
    assert_eq!(fit["loraFits"], true, "{fit}");
    assert_eq!(fit["fullFits"], true, "{fit}");
    assert!(fit["loraBytes"].as_u64().unwrap() > 0, "{fit}");
    assert_eq!(fit["device"], "cpu", "{fit}");
    // Library ids only: the window cannot name a folder.
    let err = invoke(&w, "model_fit", json!({"model": "/etc"})).unwrap_err();
    assert_eq!(err["code"], "notFound", "{err}");
    let err = invoke(
        &w,
        "import_model",
        json!({"grant": grant(&w, &d.path().join("missing")), "copy": false}),
    )
    .unwrap_err();
    assert!(
        err["message"].as_str().unwrap().contains("not a folder"),
        "{err}"
    );
    assert_eq!(
        invoke(&w, "cancel_job", json!({"id": "pull-none"})).unwrap(),
        false
    );
}

/// What a drop on the window or a dialog does in Rust: the path becomes a grant of the window.
fn grant(w: &tauri::WebviewWindow<MockRuntime>, path: &std::path::Path) -> String {
    w.state::<AppState>()
        .grants
        .grant(w.label(), path.to_path_buf())
        .id
}

#[test]
fn paths_never_granted_are_refused_for_documents_and_model_import() {
    let d = tempfile::tempdir().unwrap();
    let (_app, w) = app(d.path());
    invoke(&w, "create_project", json!({"name": "P"})).unwrap();
    let secret = d.path().join("id_rsa");
    std::fs::write(&secret, "PRIVATE KEY").unwrap();
    // A compromised page names a path (or an id it made up) instead of a grant.
    for bogus in [secret.display().to_string(), "0123456789abcdef".into()] {
        let err = invoke(
            &w,
            "add_documents",
            json!({"id": "p", "grants": [bogus], "onEvent": "__CHANNEL__:1"}),
        )
        .unwrap_err();
        assert_eq!(err["code"], "outsideScope", "{err}");
        let err = invoke(&w, "import_model", json!({"grant": bogus, "copy": true})).unwrap_err();
        assert_eq!(err["code"], "outsideScope", "{err}");
    }
    // The old path argument is not accepted at all.
    let err = invoke(
        &w,
        "add_documents",
        json!({"id": "p", "paths": [secret], "onEvent": "__CHANNEL__:1"}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("grants"), "{err}");
    let docs = d.path().join("projects/p/documents");
    assert_eq!(
        std::fs::read_dir(&docs).unwrap().count(),
        0,
        "nothing copied"
    );
    assert!(
        !std::fs::read_to_string(d.path().join("projects/p/project.json"))
            .unwrap()
            .contains("id_rsa")
    );

    // A grant of another window is refused too; this window's grant works.
    let other = w
        .state::<AppState>()
        .grants
        .grant("other-window", secret.clone())
        .id;
    let err = invoke(
        &w,
        "add_documents",
        json!({"id": "p", "grants": [other], "onEvent": "__CHANNEL__:1"}),
    )
    .unwrap_err();
    assert_eq!(err["code"], "outsideScope", "{err}");
    let notes = d.path().join("notes.md");
    std::fs::write(&notes, "# Notes\n\nHello.\n").unwrap();
    let report = invoke(
        &w,
        "add_documents",
        json!({"id": "p", "grants": [grant(&w, &notes)], "onEvent": "__CHANNEL__:1"}),
    )
    .unwrap();
    assert_eq!(report["added"].as_array().unwrap().len(), 1, "{report}");
}

#[test]
fn generate_takes_library_models_only() {
    let d = tempfile::tempdir().unwrap();
    let (_app, w) = app(d.path());
    // The UI may not point the model loader at an arbitrary folder.
    let folder = d.path().join("some-model");
    std::fs::create_dir_all(&folder).unwrap();
    let err = invoke(
        &w,
        "start_generate",
        json!({"request": {"model": folder, "prompt": "Hi"}, "onEvent": "__CHANNEL__:1"}),
    )
    .unwrap_err();
    assert_eq!(err["code"], "notFound", "{err}");
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("not a model of the library"));
    // An adapter must be a run's or an export's inside DocTune's projects.
    let model = d.path().join("tiny");
    support::write_folder(&model, &support::tiny_llama(1));
    let m = invoke(
        &w,
        "import_model",
        json!({"grant": grant(&w, &model), "copy": false}),
    )
    .unwrap();
    for adapter in [
        d.path().join("elsewhere").display().to_string(),
        "../elsewhere".to_string(),
        d.path().join("projects").display().to_string(),
    ] {
        let err = invoke(
            &w,
            "start_generate",
            json!({"request": {"model": m["id"], "adapter": adapter, "prompt": "Hi"}, "onEvent": "__CHANNEL__:1"}),
        )
        .unwrap_err();
        assert_eq!(err["code"], "outsideScope", "{adapter}: {err}");
    }
}

#[test]
fn dataset_commands_take_ids_not_paths() {
    let d = tempfile::tempdir().unwrap();
    let (_app, w) = app(d.path());
    invoke(&w, "create_project", json!({"name": "P"})).unwrap();
    assert_eq!(
        invoke(&w, "list_datasets", json!({"id": "p"})).unwrap(),
        json!([])
    );
    let err = invoke(
        &w,
        "dataset_preview",
        json!({"id": "p", "dataset": "../../etc", "n": 1}),
    )
    .unwrap_err();
    assert_eq!(err["code"], "invalidInput", "{err}");
    let err = invoke(
        &w,
        "start_dataset_build",
        json!({"id": "p", "request": {"model": "/some/folder", "options": {"mode": "pretrain"}}, "onEvent": "__CHANNEL__:1"}),
    )
    .unwrap_err();
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("not a model of the library"),
        "{err}"
    );
}

#[test]
fn training_commands_take_ids_not_paths() {
    let d = tempfile::tempdir().unwrap();
    let (_app, w) = app(d.path());
    invoke(&w, "create_project", json!({"name": "P"})).unwrap();
    assert_eq!(
        invoke(&w, "list_runs", json!({"id": "p"})).unwrap(),
        json!([])
    );
    let err = invoke(&w, "run_history", json!({"id": "p", "run": "../../x"})).unwrap_err();
    assert_eq!(err["code"], "invalidInput", "{err}");
    let err = invoke(
        &w,
        "start_training",
        json!({"id": "p", "request": {"model": "/some/folder", "dataset": "d", "config": {}}, "onEvent": "__CHANNEL__:1"}),
    )
    .unwrap_err();
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("not a model of the library"),
        "{err}"
    );
    // A run is deleted by id only, and a missing one is named.
    let err = invoke(
        &w,
        "delete_run",
        json!({"id": "p", "run": "../../x", "how": "trash"}),
    )
    .unwrap_err();
    assert_eq!(err["code"], "invalidInput", "{err}");
    let err = invoke(
        &w,
        "delete_run",
        json!({"id": "p", "run": "run-1", "how": "trash"}),
    )
    .unwrap_err();
    assert_eq!(err["code"], "notFound", "{err}");
}

#[test]
fn export_commands_take_ids_not_paths() {
    let d = tempfile::tempdir().unwrap();
    let (_app, w) = app(d.path());
    invoke(&w, "create_project", json!({"name": "P"})).unwrap();
    assert_eq!(
        invoke(&w, "list_exports", json!({"id": "p"})).unwrap(),
        json!([])
    );
    // The formats come with their rules: GGUF's default type first, the LoRA's four types.
    let formats = invoke(&w, "export_formats", json!({})).unwrap();
    assert_eq!(formats[0]["format"], "gguf");
    assert_eq!(formats[0]["quants"][0], "q4_k_m");
    let lora = formats
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["format"] == "ggufLora")
        .unwrap();
    assert_eq!(lora["quants"], json!(["f16", "q8_0", "bf16", "f32"]));
    let err = invoke(
        &w,
        "export_estimate",
        json!({"id": "p", "run": "../r", "options": {"format": "gguf"}}),
    )
    .unwrap_err();
    assert_eq!(err["code"], "invalidInput", "{err}");
    // A run named by path is refused; the window cannot name where an export goes (always the
    // project's exports/), so an `out` it sends is not even read.
    let err = invoke(
        &w,
        "start_export",
        json!({"id": "p", "run": "../../x", "options": {"format": "gguf", "out": "/tmp/x"}, "onEvent": "__CHANNEL__:1"}),
    )
    .unwrap_err();
    assert_eq!(err["code"], "invalidInput", "{err}");
    let err = invoke(
        &w,
        "start_export",
        json!({"id": "p", "run": "run-1", "options": {"format": "gguf"}, "onEvent": "__CHANNEL__:1"}),
    )
    .unwrap_err();
    assert_eq!(err["code"], "notFound", "{err}");
}

#[test]
fn the_demo_takes_nothing_from_the_window() {
    let d = tempfile::tempdir().unwrap();
    let (_app, w) = app(d.path());
    // Started normally, the window is not told to start the demo; `--demo` is read from the
    // app's own command line only.
    assert_eq!(
        invoke(&w, "launch_options", json!({})).unwrap(),
        json!({ "demo": false })
    );
}

#[test]
fn commands_not_granted_to_the_window_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let (_app, w) = app(d.path());
    // The dialog plugin is loaded (Rust opens dialogs) but the UI is not granted its commands.
    let err = invoke(&w, "plugin:dialog|open", json!({"options": {}})).unwrap_err();
    assert!(err.to_string().contains("not allowed"), "{err}");
    assert!(invoke(&w, "plugin:fs|read_file", json!({"path": "/etc/passwd"})).is_err());
    assert!(invoke(&w, "no_such_command", json!({})).is_err());
}

#[test]
fn other_windows_get_no_commands() {
    let d = tempfile::tempdir().unwrap();
    let (app, _main) = app(d.path());
    let other = tauri::WebviewWindowBuilder::new(&app, "other", Default::default())
        .build()
        .unwrap();
    let err = invoke(&other, "list_projects", json!({})).unwrap_err();
    assert!(err.to_string().contains("not allowed"), "{err}");
}

#[test]
fn capability_grants_exactly_the_app_commands() {
    let build = std::fs::read_to_string(format!("{}/build.rs", manifest_dir())).unwrap();
    let list = &build[build.find(".commands(&[").unwrap()..];
    let list = &list[..list.find("])").unwrap()];
    let commands: BTreeSet<String> = list
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|c| format!("allow-{}", c.replace('_', "-")))
        .collect();
    assert_eq!(commands.len(), 46, "{commands:?}");

    let cap = read_json("capabilities/main.json");
    assert_eq!(cap["windows"], json!(["main"]));
    let granted: BTreeSet<String> = cap["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.as_str()
                .expect("permissions are plain identifiers")
                .to_string()
        })
        .collect();
    let mut expected = commands.clone();
    expected.insert("core:event:allow-listen".into());
    expected.insert("core:event:allow-unlisten".into());
    assert_eq!(granted, expected);
    let others: Vec<_> = std::fs::read_dir(format!("{}/capabilities", manifest_dir()))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        others,
        ["main.json"],
        "no other capability file grants more"
    );
}

#[test]
fn csp_is_strict_and_there_is_no_dev_server() {
    let conf = read_json("tauri.conf.json");
    assert!(conf["build"].get("devUrl").is_none(), "no dev server");
    assert!(conf["build"].get("beforeDevCommand").is_none());
    let sec = &conf["app"]["security"];
    assert_eq!(sec["freezePrototype"], true);
    assert_eq!(conf["app"]["withGlobalTauri"], false);
    let csp = sec["csp"].as_object().unwrap();
    assert_eq!(csp["default-src"], "'self'");
    assert_eq!(csp["script-src"], "'self'");
    assert_eq!(csp["object-src"], "'none'");
    assert_eq!(csp["connect-src"], "ipc: http://ipc.localhost");
    for (k, v) in csp {
        let v = v.as_str().unwrap();
        assert!(!v.contains("unsafe-"), "{k}: {v}");
        assert!(!v.contains("https:") && !v.contains('*'), "{k}: {v}");
    }
    assert!(sec.get("dangerousDisableAssetCspModification").is_none());
}
