//! Ids of things kept in folders (projects, datasets, runs, exports): one folder name each, so an
//! id must be usable as a single path component and never name anything outside its folder.
//! New ids are the time they were made, unique in their folder.

use std::path::Path;

/// An id that cannot be a folder name of DocTune's: empty, with a path separator, or starting
/// with `.` (hidden, `.`, `..`, and the staging folders DocTune writes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{id}` is not a {kind} id")]
pub struct InvalidId {
    pub kind: &'static str,
    pub id: String,
}

/// Checks that `id` can be one folder name (see [`InvalidId`]); `kind` names it in the error
/// ("project", "dataset", "run", "export").
pub fn check_id(kind: &'static str, id: &str) -> Result<(), InvalidId> {
    if id.is_empty() || id.contains(['/', '\\', '\0']) || id.starts_with('.') {
        return Err(InvalidId {
            kind,
            id: id.to_owned(),
        });
    }
    Ok(())
}

/// The current time as RFC 3339 (`2026-11-22T17:40:00.123Z`), in UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `{prefix}-{YYYYMMDDhhmmss}` (UTC), with `-2`, `-3`, … added until no entry of that name is
/// in `dir`.
pub fn stamped_id(dir: &Path, prefix: &str) -> String {
    let stamp: String = now_rfc3339()
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(14)
        .collect();
    let base = format!("{prefix}-{stamp}");
    let mut id = base.clone();
    let mut n = 2;
    while dir.join(&id).exists() {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_single_visible_names() {
        check_id("run", "run-20261122174000").unwrap();
        for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "a\0b"] {
            let e = check_id("run", bad).unwrap_err();
            assert_eq!(e.to_string(), format!("`{bad}` is not a run id"));
        }
    }

    #[test]
    fn stamped_ids_are_unique_in_their_folder() {
        let d = tempfile::tempdir().unwrap();
        let a = stamped_id(d.path(), "run");
        assert!(
            a.starts_with("run-2") && a.len() == "run-".len() + 14,
            "{a}"
        );
        std::fs::create_dir(d.path().join(&a)).unwrap();
        let b = stamped_id(d.path(), "run");
        assert_ne!(a, b);
        check_id("run", &b).unwrap();
        assert!(now_rfc3339().ends_with('Z'));
    }
}
