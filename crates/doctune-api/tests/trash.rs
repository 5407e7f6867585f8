//! Deleting a project moves it to the OS trash. Its own test binary: it points the
//! freedesktop trash at a temporary folder (XDG_DATA_HOME) before anything else runs.

#![cfg(target_os = "linux")]

use doctune_api::{projects, Home};
use std::fs;

#[test]
fn a_deleted_project_goes_to_the_trash_whole_with_its_trash_info() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("xdg-data");
    fs::create_dir_all(&data).unwrap();
    // The only test in this binary, so no other thread reads the environment meanwhile.
    std::env::set_var("XDG_DATA_HOME", &data);
    let h = Home::at(d.path().join("home"));
    let p = projects::create(&h, "Old notes").unwrap();
    fs::write(
        std::path::Path::new(&p.path).join("documents/keep.md"),
        "kept",
    )
    .unwrap();
    let name = projects::delete(&h, &p.id, projects::Deletion::Trash).unwrap();
    assert_eq!(name, "Old notes");
    assert!(!std::path::Path::new(&p.path).exists());
    assert!(projects::list(&h).unwrap().is_empty());
    let trashed = data.join("Trash/files").join(&p.id);
    assert_eq!(
        fs::read_to_string(trashed.join("documents/keep.md")).unwrap(),
        "kept"
    );
    let info =
        fs::read_to_string(data.join("Trash/info").join(format!("{}.trashinfo", p.id))).unwrap();
    assert!(
        info.contains("[Trash Info]") && info.contains("Path="),
        "{info}"
    );
}
