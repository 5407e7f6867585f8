//! Where DocTune keeps its data: `$DOCTUNE_HOME` if set, else the folder the person chose in
//! Settings (a pointer kept in the OS config folder: `<config>/DocTune/data-folder.json`, read
//! at start), else the OS's per-user data folder (`~/.local/share/DocTune` on Linux,
//! `~/Library/Application Support/DocTune` on macOS, `%APPDATA%\DocTune` on Windows). Choosing a
//! folder moves nothing: DocTune uses it from the next start. [`Home`] owns its layout:
//!
//! ```text
//! <home>/projects/<id>/   one folder per project (see doctune_core::ProjectDir)
//! <home>/hub/             models pulled from the Hub, in Hugging Face's cache layout
//! <home>/models/<id>/     private copies of imported model folders
//! <home>/models.json      the model library
//! <home>/preferences.json the person's defaults (training device and precision)
//! <home>/demo/            the built-in demo's documents, written out to be added
//! <home>/.lock            held while models.json changes
//! ```

use crate::ApiError;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where the data folder came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HomeSource {
    /// `DOCTUNE_HOME` (it wins over a chosen folder).
    Env,
    /// The folder chosen in Settings.
    Chosen,
    /// The OS's per-user data folder.
    Default,
}

/// The data folder in use, and the one the next start will use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataFolder {
    pub path: String,
    pub source: HomeSource,
    /// What the next start will use, when it differs from `path`.
    pub next: Option<String>,
}

/// The pointer to a chosen data folder, in the OS config folder `config_dir`.
fn pointer_file(config_dir: &Path) -> PathBuf {
    config_dir.join("DocTune").join("data-folder.json")
}

#[derive(Serialize, Deserialize)]
struct Pointer {
    path: PathBuf,
}

fn read_pointer(config_dir: &Path) -> Option<PathBuf> {
    let bytes = std::fs::read(pointer_file(config_dir)).ok()?;
    let p: Pointer = serde_json::from_slice(&bytes).ok()?;
    p.path.is_absolute().then_some(p.path)
}

/// DocTune's data folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// A home at an explicit folder (tests, `--home`).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The default home: `DOCTUNE_HOME`, else the folder chosen in Settings, else the OS data
    /// folder.
    pub fn from_env() -> Result<Self, ApiError> {
        Ok(Self::locate(
            std::env::var_os("DOCTUNE_HOME"),
            dirs::config_dir(),
            dirs::data_dir(),
        )?
        .0)
    }

    /// [`Home::from_env`] from its inputs: `DOCTUNE_HOME`, the OS config and data folders.
    pub fn locate(
        env: Option<OsString>,
        config_dir: Option<PathBuf>,
        data_dir: Option<PathBuf>,
    ) -> Result<(Self, HomeSource), ApiError> {
        if let Some(p) = env.filter(|p| !p.is_empty()) {
            return Ok((Self::at(PathBuf::from(p)), HomeSource::Env));
        }
        if let Some(p) = config_dir.as_deref().and_then(read_pointer) {
            return Ok((Self::at(p), HomeSource::Chosen));
        }
        data_dir
            .map(|d| (Self::at(d.join("DocTune")), HomeSource::Default))
            .ok_or_else(|| {
                ApiError::invalid(
                    "cannot tell where to keep DocTune's data: no home folder; set DOCTUNE_HOME",
                )
            })
    }

    /// Makes `folder` the data folder from the next start on (`None`: the OS default again),
    /// recording it in the OS config folder `config_dir`. The folder must be an existing,
    /// writable folder given by its absolute path; nothing is moved.
    pub fn choose(config_dir: &Path, folder: Option<&Path>) -> Result<(), ApiError> {
        let pointer = pointer_file(config_dir);
        let Some(folder) = folder else {
            return match std::fs::remove_file(&pointer) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(ApiError::io(&pointer, "cannot remove", &e))
                }
                _ => Ok(()),
            };
        };
        if !folder.is_absolute() || !folder.is_dir() {
            return Err(ApiError::invalid(format!(
                "{}: not an existing folder",
                folder.display()
            )));
        }
        let folder = folder
            .canonicalize()
            .map_err(|e| ApiError::io(folder, "cannot resolve", &e))?;
        // Writable: a file can be made and removed there.
        tempfile::tempfile_in(&folder).map_err(|e| ApiError::io(&folder, "cannot write in", &e))?;
        let dir = pointer.parent().unwrap_or(config_dir);
        std::fs::create_dir_all(dir).map_err(|e| ApiError::io(dir, "cannot create", &e))?;
        doctune_core::write_json_atomic(&pointer, &Pointer { path: folder })
            .map_err(|e| ApiError::io(&pointer, "cannot write", &e))
    }

    /// The data folder in use and what the next start will use (for Settings).
    pub fn data_folder(&self) -> DataFolder {
        let source = if std::env::var_os("DOCTUNE_HOME").is_some_and(|v| !v.is_empty()) {
            HomeSource::Env
        } else if dirs::data_dir().map(|d| d.join("DocTune")).as_deref() == Some(self.root()) {
            HomeSource::Default
        } else {
            HomeSource::Chosen
        };
        self.data_folder_in(source, dirs::config_dir().as_deref())
    }

    /// Chooses the data folder of the next start in the OS config folder (see [`Home::choose`]).
    pub fn choose_for_next_start(folder: Option<&Path>) -> Result<(), ApiError> {
        let config = dirs::config_dir().ok_or_else(|| {
            ApiError::invalid("this system has no config folder to remember the data folder in")
        })?;
        Self::choose(&config, folder)
    }

    /// [`Home::data_folder`] with the source and the config folder given.
    pub fn data_folder_in(&self, source: HomeSource, config_dir: Option<&Path>) -> DataFolder {
        let next = match source {
            HomeSource::Env => None,
            _ => {
                let (home, _) =
                    Self::locate(None, config_dir.map(Path::to_path_buf), dirs::data_dir())
                        .unwrap_or((self.clone(), source));
                (home.root != self.root).then(|| home.root.display().to_string())
            }
        };
        DataFolder {
            path: self.root.display().to_string(),
            source,
            next,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder that holds one folder per project.
    pub fn projects_dir(&self) -> PathBuf {
        self.root.join("projects")
    }

    /// The Hub cache (Hugging Face's layout).
    pub fn hub_dir(&self) -> PathBuf {
        self.root.join("hub")
    }

    /// Private copies of imported model folders.
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    /// Where the built-in demo writes its documents before adding them to its project.
    pub fn demo_dir(&self) -> PathBuf {
        self.root.join("demo")
    }

    /// The model library.
    pub fn library_file(&self) -> PathBuf {
        self.root.join("models.json")
    }

    /// The person's defaults ([`crate::preferences`]).
    pub fn preferences_file(&self) -> PathBuf {
        self.root.join("preferences.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_wins_then_the_chosen_folder_then_the_default() {
        let d = tempfile::tempdir().unwrap();
        let (config, data) = (d.path().join("config"), d.path().join("data"));
        let chosen = d.path().join("big-disk");
        std::fs::create_dir_all(&chosen).unwrap();
        let locate = |env: Option<&str>| {
            Home::locate(
                env.map(OsString::from),
                Some(config.clone()),
                Some(data.clone()),
            )
            .unwrap()
        };
        assert_eq!(
            locate(None),
            (Home::at(data.join("DocTune")), HomeSource::Default)
        );
        Home::choose(&config, Some(&chosen)).unwrap();
        let (home, source) = locate(None);
        assert_eq!(
            (home.root(), source),
            (chosen.canonicalize().unwrap().as_path(), HomeSource::Chosen)
        );
        assert_eq!(locate(Some("/elsewhere")).1, HomeSource::Env);
        // What the window shows: in use, and (after another choice) what the next start uses.
        let other = d.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        Home::choose(&config, Some(&other)).unwrap();
        let shown = home.data_folder_in(HomeSource::Chosen, Some(&config));
        assert_eq!(
            shown.next.as_deref(),
            Some(other.canonicalize().unwrap().to_str().unwrap())
        );
        // Back to the default.
        Home::choose(&config, None).unwrap();
        assert_eq!(locate(None).1, HomeSource::Default);
        Home::choose(&config, None).unwrap();
        // Only existing folders by absolute path.
        for bad in [Path::new("relative"), d.path().join("missing").as_path()] {
            let e = Home::choose(&config, Some(bad)).unwrap_err();
            assert!(
                e.message.contains("not an existing folder"),
                "{}",
                e.message
            );
        }
    }
}
