//! `doctor`: what this machine offers DocTune — OS, CPU, RAM, free disk where the data lives,
//! NVIDIA GPUs (or why none), and whether the OS keychain answers.

use crate::Home;
use doctune_gpu::{GpuInfo, Gpus, SystemInfo};
use doctune_secrets::KeychainStatus;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DoctorReport {
    pub version: String,
    pub system: SystemInfo,
    pub data_dir: String,
    pub free_disk_bytes: Option<u64>,
    pub gpus: Vec<GpuInfo>,
    /// Why `gpus` is empty, when it is.
    pub gpu_message: Option<String>,
    pub keychain: KeychainStatus,
}

/// Takes the readings. Never fails: what cannot be read is `None` or explained.
pub fn doctor(home: &Home, gpus: &Gpus) -> DoctorReport {
    // The data folder may not exist yet: measure the nearest folder that does.
    let existing = home
        .root()
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    DoctorReport {
        version: env!("CARGO_PKG_VERSION").into(),
        system: doctune_gpu::system_info(),
        data_dir: home.root().display().to_string(),
        free_disk_bytes: doctune_gpu::free_disk_bytes(existing),
        gpus: gpus.list(),
        gpu_message: gpus.unavailable_reason(),
        keychain: doctune_secrets::probe(),
    }
}
