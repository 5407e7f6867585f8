//! Base models: the model library (`models.json` in DocTune's home), pulling from the Hub into
//! `hub/` (Hugging Face's cache layout), and importing a local folder — referenced in place, or
//! copied into `models/<id>/` with only the files DocTune uses.

use crate::lock::DirLock;
use crate::projects::slug;
use crate::{hub, ApiError, Home};
use doctune_core::{
    now_rfc3339, write_json_atomic, CancelToken, Code, Family, ProgressSink, Scope, StagedDir,
};
use doctune_hub::ModelFolderInfo;
use doctune_secrets::SecretStore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ModelSource {
    #[serde(rename_all = "camelCase")]
    Hub {
        repo: String,
        revision: String,
        commit: String,
    },
    #[serde(rename_all = "camelCase")]
    Local { from: String, copied: bool },
    /// A new model made by DocTune for a project: a tokenizer trained on its documents and
    /// freshly initialised weights ([`crate::scratch`]).
    #[serde(rename_all = "camelCase")]
    Scratch {
        project: String,
        size: String,
        documents: usize,
    },
}

/// One model of the library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelEntry {
    pub id: String,
    pub name: String,
    /// The folder the model is loaded from.
    pub path: String,
    pub source: ModelSource,
    pub family: Family,
    /// The family's name for people ("Phi-3"); filled in when the library is read.
    #[serde(skip_deserializing)]
    pub family_label: String,
    pub architecture: String,
    pub dtype: String,
    pub parameters: u64,
    pub size_bytes: u64,
    pub added_at: String,
    /// The licence its model card (`README.md` front matter) names, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
}

/// The `license:` of a model card's YAML front matter (the first 64 KiB of `README.md`).
fn card_license(dir: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = String::new();
    std::fs::File::open(dir.join("README.md"))
        .ok()?
        .take(64 << 10)
        .read_to_string(&mut head)
        .ok()?;
    let front = head.strip_prefix("---")?;
    let front = &front[..front.find("\n---")?];
    front.lines().find_map(|l| {
        let v = l.strip_prefix("license:")?.trim().trim_matches(['"', '\'']);
        (!v.is_empty()).then(|| v.chars().take(64).collect())
    })
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Library {
    schema: u32,
    models: Vec<ModelEntry>,
}

fn read_library(home: &Home) -> Result<Library, ApiError> {
    let path = home.library_file();
    match std::fs::read(&path) {
        Ok(b) => {
            let mut lib: Library = serde_json::from_slice(&b).map_err(|e| {
                ApiError::new(
                    Code::Internal,
                    format!("{}: not a valid model library: {e}", path.display()),
                )
            })?;
            for m in &mut lib.models {
                m.family_label = m.family.label().to_string();
            }
            Ok(lib)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Library {
            schema: 1,
            models: Vec::new(),
        }),
        Err(e) => Err(ApiError::io(&path, "cannot read", &e)),
    }
}

/// The models in the library, newest first.
pub fn list(home: &Home) -> Result<Vec<ModelEntry>, ApiError> {
    let mut models = read_library(home)?.models;
    models.reverse();
    Ok(models)
}

/// Checks that `id` names a model of the library: what the app's UI may name (never a folder).
pub fn require_in_library(home: &Home, id: &str) -> Result<(), ApiError> {
    if list(home)?.iter().any(|m| m.id == id) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::NotFound,
            format!("{id}: not a model of the library (import or pull it first)"),
        ))
    }
}

/// Adds or refreshes the entry for `info` (one entry per folder).
pub(crate) fn register(
    home: &Home,
    name: &str,
    info: &ModelFolderInfo,
    source: ModelSource,
) -> Result<ModelEntry, ApiError> {
    // Every dimension and ratio of config.json in range now, not when the model first loads.
    doctune_models::ModelConfig::load(&info.path)?;
    std::fs::create_dir_all(home.root())
        .map_err(|e| ApiError::io(home.root(), "cannot create", &e))?;
    let _lock = DirLock::acquire(home.root())?;
    let mut lib = read_library(home)?;
    let path = info
        .path
        .canonicalize()
        .unwrap_or_else(|_| info.path.clone())
        .display()
        .to_string();
    let existing = lib.models.iter().position(|m| m.path == path);
    let id = match existing {
        Some(i) => lib.models[i].id.clone(),
        None => {
            let base = slug(&name.replace('/', "--"));
            let mut id = base.clone();
            let mut n = 2;
            while lib.models.iter().any(|m| m.id == id) {
                id = format!("{base}-{n}");
                n += 1;
            }
            id
        }
    };
    let license = card_license(Path::new(&path));
    let entry = ModelEntry {
        id,
        name: name.to_string(),
        path,
        source,
        family: info.family,
        family_label: info.family.label().to_string(),
        architecture: info.architecture.clone(),
        dtype: info.dtype.clone(),
        parameters: info.parameters,
        size_bytes: info.size_bytes,
        added_at: now_rfc3339(),
        license,
    };
    match existing {
        Some(i) => lib.models[i] = entry.clone(),
        None => lib.models.push(entry.clone()),
    }
    lib.schema = 1;
    let p = home.library_file();
    write_json_atomic(&p, &lib).map_err(|e| ApiError::io(&p, "cannot write", &e))?;
    Ok(entry)
}

/// The folder a model reference names: a library id, or a folder that exists.
pub fn resolve_model(home: &Home, model: &str) -> Result<PathBuf, ApiError> {
    if let Some(entry) = list(home)?.into_iter().find(|m| m.id == model) {
        return Ok(PathBuf::from(entry.path));
    }
    let path = PathBuf::from(model);
    if path.is_dir() {
        return Ok(path);
    }
    Err(ApiError::new(
        Code::NotFound,
        format!("{model}: neither a model of the library nor a model folder"),
    ))
}

/// `org/name` or `name`: letters, digits, `-`, `_`, `.`; no part starting with `.` or `-`.
fn validate_repo(repo: &str) -> Result<(), ApiError> {
    let parts: Vec<&str> = repo.split('/').collect();
    let ok = (1..=2).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 96
                && !p.starts_with(['.', '-'])
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "\"{repo}\" is not a Hub model id (like org/name)"
        )))
    }
}

fn validate_revision(rev: &str) -> Result<(), ApiError> {
    if rev.is_empty()
        || rev.len() > 128
        || rev.contains("..")
        || rev
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(ApiError::invalid(format!(
            "\"{rev}\" is not a revision (a branch, tag or commit)"
        )));
    }
    Ok(())
}

/// Downloads `repo` at `revision` (safe files only, each hash-checked) and registers it.
pub fn pull(
    home: &Home,
    store: &dyn SecretStore,
    repo: &str,
    revision: &str,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<ModelEntry, ApiError> {
    validate_repo(repo)?;
    validate_revision(revision)?;
    let token = crate::token::current(store);
    let client = hub::client(home, token.as_ref())?;
    let pulled =
        hub::block_on(client.pull(repo, revision, &doctune_gpu::free_disk_bytes, sink, cancel))?;
    register(
        home,
        repo,
        &pulled.info,
        ModelSource::Hub {
            repo: repo.into(),
            revision: revision.into(),
            commit: pulled.commit,
        },
    )
}

/// Validates the model folder `folder` and registers it — in place, or copied into DocTune's
/// `models/` folder with only the files DocTune uses.
pub fn import(home: &Home, folder: &Path, copy: bool) -> Result<ModelEntry, ApiError> {
    let info = doctune_hub::inspect_folder(folder)?;
    let name = folder
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    let from = folder.display().to_string();
    if !copy {
        return register(
            home,
            &name,
            &info,
            ModelSource::Local {
                from,
                copied: false,
            },
        );
    }
    let models = home.models_dir();
    std::fs::create_dir_all(&models).map_err(|e| ApiError::io(&models, "cannot create", &e))?;
    let scope = Scope::new(&models)?;
    let needed = info.size_bytes;
    if let Some(free) = doctune_gpu::free_disk_bytes(scope.root()) {
        if free < needed {
            return Err(ApiError::new(
                Code::NoSpace,
                format!(
                    "{}: copying needs {needed} bytes but {} has {free} free",
                    folder.display(),
                    models.display()
                ),
            ));
        }
    }
    let staging = StagedDir::new_in(scope.root(), "import")
        .map_err(|e| ApiError::io(&models, "cannot create", &e))?;
    // Copied from handles opened through the folder's scope: a file swapped for a link out of
    // the folder after the check above is refused, never copied.
    let source = Scope::of_model_folder(folder)?;
    for f in &info.files {
        let src = folder.join(f);
        let dst = scope.resolve(staging.path().join(f))?;
        let (mut from, _) = source.open(&src)?;
        let copied = doctune_core::open::create_new(&dst)
            .and_then(|mut to| std::io::copy(&mut from, &mut to).and_then(|_| to.sync_all()));
        copied.map_err(|e| {
            if doctune_core::open::is_no_space(&e) {
                ApiError::new(
                    Code::NoSpace,
                    format!(
                        "{}: the disk holding {} is full; nothing was imported",
                        src.display(),
                        models.display()
                    ),
                )
            } else {
                ApiError::io(&src, "cannot copy", &e)
            }
        })?;
    }
    // Validate the copy itself, then move it into place in one rename.
    doctune_hub::inspect_folder(staging.path())?;
    let base = slug(&name);
    let names = std::iter::once(base.clone()).chain((2..).map(|n| format!("{base}-{n}")));
    let dest = staging
        .commit_first(names.take(10_000))
        .map_err(|e| ApiError::io(&models, "cannot move the copy into place", &e))?;
    let info = doctune_hub::inspect_folder(&dest)?;
    register(
        home,
        &name,
        &info,
        ModelSource::Local { from, copied: true },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_licence_comes_from_the_model_cards_front_matter() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(card_license(d.path()), None);
        let card = d.path().join("README.md");
        std::fs::write(
            &card,
            "---\nlanguage: en\nlicense: \"apache-2.0\"\ntags: [x]\n---\n# M\n",
        )
        .unwrap();
        assert_eq!(card_license(d.path()).as_deref(), Some("apache-2.0"));
        std::fs::write(&card, "# M\nlicense: mit\n").unwrap();
        assert_eq!(card_license(d.path()), None, "only the front matter counts");
        std::fs::write(&card, "---\nlicense:\n---\n").unwrap();
        assert_eq!(card_license(d.path()), None);
    }

    #[test]
    fn repo_ids_and_revisions() {
        for ok in ["org/name", "gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "a_b/c.d"] {
            validate_repo(ok).unwrap();
        }
        for bad in [
            "",
            "a/b/c",
            "../x",
            "org/.hidden",
            "org/na me",
            "org/-x",
            "/x",
        ] {
            assert!(validate_repo(bad).is_err(), "{bad}");
        }
        validate_revision("main").unwrap();
        validate_revision("refs/pr/1").unwrap();
        for bad in ["", "a b", "../../x", "a\\b"] {
            assert!(validate_revision(bad).is_err(), "{bad}");
        }
    }
}
