//! Paths the user chose, held as grants. A file or folder dropped on the window (Tauri's
//! drag-drop window event, received here in Rust) or chosen in a native dialog (opened from Rust)
//! is recorded for that window under a random id; the UI only ever sees the id and a display
//! name, and the commands that read the user's files (`add_documents`, `import_model`) accept
//! only ids granted to the calling window. A page in the webview that names a path itself —
//! `~/.ssh/id_rsa`, or a `\\host\share` path on Windows — is refused with `outsideScope`, because
//! no grant holds it.

use doctune_api::{ApiError, Code};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use tauri::{Emitter, Runtime};

/// The event a window receives after a drop: the dropped paths' grants (`Vec<GrantedPath>`).
pub const DROPPED_EVENT: &str = "doctune://dropped";

/// Grants kept per window; past this, the window's oldest are forgotten.
pub const MAX_GRANTS_PER_WINDOW: usize = 10_000;

/// What the UI learns of a granted path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantedPath {
    /// The opaque id the UI passes back.
    pub id: String,
    /// The path as the user chose it, to show.
    pub name: String,
}

#[derive(Debug)]
struct Grant {
    window: String,
    path: PathBuf,
    seq: u64,
}

/// The grants of every window of the app.
#[derive(Debug, Default)]
pub struct Grants {
    inner: Mutex<(u64, HashMap<String, Grant>)>,
}

impl Grants {
    /// Records `path` as chosen by the user in `window`.
    pub fn grant(&self, window: &str, path: PathBuf) -> GrantedPath {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (seq, map) = &mut *g;
        *seq += 1;
        let mine = map.values().filter(|v| v.window == window).count();
        if mine >= MAX_GRANTS_PER_WINDOW {
            if let Some(oldest) = map
                .iter()
                .filter(|(_, v)| v.window == window)
                .min_by_key(|(_, v)| v.seq)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = path.display().to_string();
        map.insert(
            id.clone(),
            Grant {
                window: window.into(),
                path,
                seq: *seq,
            },
        );
        GrantedPath { id, name }
    }

    /// The paths behind `ids`, if every one was granted to `window`; else `outsideScope`.
    pub fn resolve(&self, window: &str, ids: &[String]) -> Result<Vec<PathBuf>, ApiError> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ids.iter()
            .map(|id| match g.1.get(id) {
                Some(grant) if grant.window == window => Ok(grant.path.clone()),
                _ => Err(ApiError::new(
                    Code::OutsideScope,
                    format!(
                        "{}: not a file or folder you dropped on this window or chose in its dialog",
                        shown(id)
                    ),
                )),
            })
            .collect()
    }

    /// Forgets every grant of `window` (it was closed).
    pub fn forget_window(&self, window: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1.retain(|_, v| v.window != window);
    }
}

/// An id as the UI sent it, short and without control characters, for a message.
fn shown(id: &str) -> String {
    let s: String = id.chars().take(64).flat_map(char::escape_debug).collect();
    format!("\"{s}\"")
}

/// What a drop of `paths` on `window` does: each path becomes a grant of that window, and the
/// window is told the grants (`DROPPED_EVENT`).
pub fn dropped<R: Runtime>(window: &tauri::Window<R>, grants: &Grants, paths: Vec<PathBuf>) {
    let granted: Vec<GrantedPath> = paths
        .into_iter()
        .map(|p| grants.grant(window.label(), p))
        .collect();
    if let Err(e) = window.emit_to(window.label(), DROPPED_EVENT, &granted) {
        tracing::warn!("cannot tell the window about a drop: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_belong_to_their_window() {
        let g = Grants::default();
        let a = g.grant("main", PathBuf::from("/home/u/notes.md"));
        assert_eq!(a.name, "/home/u/notes.md");
        assert_eq!(
            g.resolve("main", std::slice::from_ref(&a.id)).unwrap(),
            vec![PathBuf::from("/home/u/notes.md")]
        );
        let e = g.resolve("other", std::slice::from_ref(&a.id)).unwrap_err();
        assert_eq!(e.code, Code::OutsideScope);
        let e = g
            .resolve("main", &["/home/u/.ssh/id_rsa".to_string()])
            .unwrap_err();
        assert_eq!(e.code, Code::OutsideScope);
        assert!(
            e.message.contains("not a file or folder you dropped"),
            "{}",
            e.message
        );
        g.forget_window("main");
        assert!(g.resolve("main", &[a.id]).is_err());
    }

    #[test]
    fn a_window_keeps_a_bounded_number_of_grants() {
        let g = Grants::default();
        let first = g.grant("main", PathBuf::from("/0"));
        for i in 0..MAX_GRANTS_PER_WINDOW {
            g.grant("main", PathBuf::from(format!("/{i}")));
        }
        assert!(g.resolve("main", &[first.id]).is_err());
    }
}
