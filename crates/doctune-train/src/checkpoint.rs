//! Checkpoints: `checkpoints/step-NNNNNNNN/` holds the trainable weights
//! (`trainable.safetensors`), AdamW's moments (`optimizer.safetensors`) and `state.json` (the
//! step, the data cursor, the dropout generator, early-stopping and loss-scale state) —
//! everything a resumed run needs to continue bit for bit. Each is built in a [`StagedDir`] and
//! renamed into place; the newest `keep_checkpoints` are kept.

use crate::optim::{AdamW, LossScaler};
use crate::run_dir::{checkpoint_name, RunDir, CHECKPOINT_WEIGHTS as WEIGHTS_FILE, STATE_FILE};
use crate::{io, TrainError};
use candle_core::{Device, Tensor};
use doctune_core::StagedDir;
use doctune_models::rng::ModelRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// `state.json` of a checkpoint: where the run is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct State {
    pub step: u64,
    pub epoch: u64,
    pub position: usize,
    pub rng_seed: String,
    pub rng_word_pos: String,
    pub best_eval: Option<f64>,
    pub evals_without_improvement: u32,
    pub tokens_seen: u64,
    /// f16 runs: the loss scale, carried across checkpoints so a resumed run continues exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scaler: Option<LossScaler>,
}

/// Writes a checkpoint of `state.step` (once per step: an existing one is kept) with the
/// optimiser's variables and moments and the dropout generator, then keeps the newest `keep`.
pub(crate) fn write(
    run: &RunDir,
    state: &mut State,
    opt: &AdamW,
    rng: &ModelRng,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    let dir = run.checkpoints_dir();
    let name = checkpoint_name(state.step);
    let dest = dir.join(&name);
    if dest.exists() {
        return Ok(dest);
    }
    // The trained weights and the optimiser's two moments, checked against the disk first
    // (see doctune_core::space); a checkpoint that still runs out of space is removed whole and
    // the previous one stays the newest.
    let var_bytes: u64 = opt
        .vars()
        .iter()
        .map(|(_, v)| (v.elem_count() * v.dtype().size_in_bytes()) as u64)
        .sum();
    doctune_core::space::ensure_room(&dir, 3 * var_bytes + (1 << 20), "the checkpoint")
        .map_err(io(&dir))?;
    let tmp = StagedDir::new_in(&dir, &name).map_err(io(&dir))?;
    let weights: Vec<(String, Tensor)> = opt
        .vars()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_detached_tensor()))
        .collect();
    doctune_models::save_safetensors(&tmp.path().join(WEIGHTS_FILE), &weights)?;
    doctune_models::save_safetensors(&tmp.path().join(OPTIMIZER_FILE), &opt.state())?;
    state.rng_seed = hex::encode(rng.get_seed());
    state.rng_word_pos = rng.get_word_pos().to_string();
    let state_path = tmp.path().join(STATE_FILE);
    doctune_core::write_json_atomic(&state_path, &*state).map_err(io(&state_path))?;
    let dest = tmp.commit(&name).map_err(io(&dest))?;
    let mut all = run.checkpoints();
    while all.len() > keep.max(1) {
        let old = all.remove(0);
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(dest)
}

/// Reads checkpoint `ckpt` back: sets the optimiser's variables and moments and returns the
/// run's state and the dropout generator as they were.
pub(crate) fn restore(
    ckpt: &Path,
    device: &Device,
    opt: &mut AdamW,
) -> Result<(State, ModelRng), TrainError> {
    let state_path = ckpt.join(STATE_FILE);
    let corrupt = |message: String| TrainError::Corrupt {
        path: state_path.clone(),
        message,
    };
    let state: State =
        serde_json::from_slice(&std::fs::read(&state_path).map_err(io(&state_path))?)
            .map_err(|e| corrupt(e.to_string()))?;
    let weights_path = ckpt.join(WEIGHTS_FILE);
    let weights = candle_core::safetensors::load(&weights_path, device)?;
    for (name, var) in opt.vars() {
        let t = weights.get(name).ok_or_else(|| TrainError::Corrupt {
            path: weights_path.clone(),
            message: format!("no weight {name}"),
        })?;
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    let moments = candle_core::safetensors::load(ckpt.join(OPTIMIZER_FILE), device)?;
    // The optimiser counts the steps it applied (f16 runs skip overflowed ones).
    let applied = state.step - state.loss_scaler.as_ref().map_or(0, |s| s.skipped);
    opt.load_state(|n| moments.get(n).cloned(), applied)?;
    let seed: [u8; 32] = hex::decode(&state.rng_seed)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("bad generator state".into()))?;
    let mut rng = ModelRng::from_seed(seed);
    rng.set_word_pos(state.rng_word_pos.parse().unwrap_or(0));
    Ok((state, rng))
}
