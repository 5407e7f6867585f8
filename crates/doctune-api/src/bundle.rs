//! Job bundles for the trainers that run on clusters, and their results brought back: the use
//! cases behind `doctune bundle` and `doctune runs import` (see `doctune_export::bundle` for the
//! folder and `doctune_train::import` for the checks).

use crate::models::{self, resolve_model, ModelSource};
use crate::train::{resolve_dataset, RunConfig};
use crate::{ApiError, Home};
use doctune_core::{Area, CancelToken, ProgressSink, ProjectDir};
pub use doctune_export::bundle::{BaseModelRef, BundleReport};
use doctune_export::bundle::{BundleRequest, BUNDLE_FILE};
use doctune_train::RunFile;
use std::path::{Path, PathBuf};

/// How the bundle names the base model: the library entry's Hub repository (and commit) when it
/// was pulled from the Hub, and the folder it loads from here.
fn base_ref(home: &Home, reference: &str, dir: &Path) -> Result<BaseModelRef, ApiError> {
    let entry = models::list(home)?
        .into_iter()
        .find(|m| m.id == reference || Path::new(&m.path) == dir);
    let (hub_repo, revision) = match entry.as_ref().map(|e| &e.source) {
        Some(ModelSource::Hub { repo, commit, .. }) => (Some(repo.clone()), Some(commit.clone())),
        _ => (None, None),
    };
    Ok(BaseModelRef {
        path: dir.display().to_string(),
        hub_repo,
        revision,
        name: entry.map_or_else(
            || {
                dir.file_name()
                    .map_or(reference.to_string(), |n| n.to_string_lossy().into_owned())
            },
            |e| e.name,
        ),
    })
}

/// Writes a job bundle of `config` (its `base_model` a library id or folder, its `dataset` a
/// dataset id of the project or a folder) into `out`.
pub fn bundle(
    home: &Home,
    project_dir: &Path,
    mut config: RunConfig,
    out: &Path,
    initial_adapter: bool,
    sink: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<BundleReport, ApiError> {
    let reference = config.base_model.display().to_string();
    config.base_model = resolve_model(home, &reference)?;
    config.dataset = resolve_dataset(project_dir, &config.dataset.display().to_string())?;
    let base = base_ref(home, &reference, &config.base_model)?;
    Ok(doctune_export::bundle::write_bundle(
        &BundleRequest {
            config,
            base,
            out: out.to_path_buf(),
            initial_adapter,
        },
        sink,
        cancel,
    )?)
}

/// Registers the adapter a bundle's run (or any PEFT training) wrote in `source` as a run of
/// the project. The settings come from `source/bundle.json` when there is one; `model` (a
/// library id or folder) names the base model when the bundle's folder is not on this machine,
/// or when `source` has no `bundle.json`.
pub fn import_run(
    home: &Home,
    project_dir: &Path,
    source: &Path,
    model: Option<&str>,
) -> Result<RunFile, ApiError> {
    let settings = source.join(BUNDLE_FILE);
    let mut config: RunConfig = match std::fs::read(&settings) {
        Ok(bytes) => {
            let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::invalid(format!(
                    "{}: not a bundle's settings: {e}",
                    settings.display()
                ))
            })?;
            serde_json::from_value(v["config"].clone()).map_err(|e| {
                ApiError::invalid(format!("{}: no run settings: {e}", settings.display()))
            })?
        }
        Err(_) => RunConfig::default(),
    };
    config.base_model = match model {
        Some(m) => resolve_model(home, m)?,
        None if config.base_model.join("config.json").is_file() => config.base_model.clone(),
        None => {
            return Err(ApiError::invalid(format!(
                "{}: name the base model the adapter was trained on (--model){}",
                source.display(),
                if settings.is_file() {
                    format!(
                        "; the bundle's ({}) is not on this machine",
                        config.base_model.display()
                    )
                } else {
                    String::new()
                }
            )))
        }
    };
    if !doctune_dataset::DatasetDir::is_dataset(&config.dataset) {
        config.dataset = PathBuf::new();
    }
    let runs = ProjectDir::open(project_dir)?.area(Area::Runs)?;
    std::fs::create_dir_all(&runs).map_err(|e| ApiError::io(&runs, "cannot create", &e))?;
    let id = doctune_core::stamped_id(&runs, "import");
    let from = std::fs::canonicalize(source)
        .unwrap_or_else(|_| source.to_path_buf())
        .display()
        .to_string();
    Ok(doctune_train::import::import_run(
        &runs, &id, source, config, &from,
    )?)
}
