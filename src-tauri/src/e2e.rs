//! Built only with the `e2e` feature: the app build `scripts/test` drives over WebDriver, never a
//! release or a package. WebDriver cannot drop a file on a native window or click in a native
//! dialog, so the end-to-end tests hand those two user actions in through a folder named by
//! `DOCTUNE_E2E_INBOX`: a file `{"drop": [paths]}` is a drop on the main window (it goes through
//! [`grants::dropped`](crate::grants::dropped), as a real drop does); `{"choose": [paths]}` is the
//! answer the next file or folder dialog gives. Everything after that — grants, events, commands —
//! is the code a user's drop or dialog runs.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tauri::{Manager, Runtime};

static CHOICES: Mutex<VecDeque<Vec<PathBuf>>> = Mutex::new(VecDeque::new());

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
enum Action {
    Drop(Vec<PathBuf>),
    Choose(Vec<PathBuf>),
}

/// The answer the next dialog gives, if a test queued one.
pub fn next_choice() -> Option<Vec<PathBuf>> {
    CHOICES.lock().ok()?.pop_front()
}

/// Starts reading the inbox (if `DOCTUNE_E2E_INBOX` is set).
pub fn start<R: Runtime>(app: &tauri::AppHandle<R>) {
    let Some(inbox) = std::env::var_os("DOCTUNE_E2E_INBOX").map(PathBuf::from) else {
        return;
    };
    let app = app.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(50));
        let Ok(entries) = std::fs::read_dir(&inbox) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in files {
            let action = std::fs::read(&f)
                .ok()
                .and_then(|b| serde_json::from_slice::<Action>(&b).ok());
            match action {
                Some(Action::Drop(paths)) => {
                    if let Some(w) = app.get_webview_window("main") {
                        let state = app.state::<crate::AppState>();
                        crate::grants::dropped(&w.as_ref().window(), &state.grants, paths);
                    }
                }
                Some(Action::Choose(paths)) => {
                    if let Ok(mut q) = CHOICES.lock() {
                        q.push_back(paths);
                    }
                }
                None => tracing::warn!("e2e inbox: {} is not an action", f.display()),
            }
            // Removed once handled: the test waits for this before acting on it.
            let _ = std::fs::remove_file(&f);
        }
    });
}
