//! `doctor`: what this machine offers DocTune — OS, CPU, RAM, free disk where the data lives,
//! NVIDIA GPUs (or why none), and whether the OS keychain answers.

use crate::Home;
use doctune_gpu::{GpuInfo, Gpus, SystemInfo};
use doctune_models::{DeviceKind, Precision};
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
    /// Where this build can train, and in which precisions.
    pub devices: Vec<DeviceOption>,
}

/// A compute device as the Train view offers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceOption {
    pub device: DeviceKind,
    /// Whether a run can use it now (built in, and the hardware is there).
    pub available: bool,
    pub precisions: Vec<Precision>,
    /// Why it is not available.
    pub reason: Option<String>,
}

/// The devices of this build: the CPU always (bf16 where it has AVX-512 BF16); CUDA when built in
/// and NVML sees a GPU (bf16 only from compute capability 8.0); Metal when built in on macOS.
pub fn devices(gpus: &[GpuInfo]) -> Vec<DeviceOption> {
    DeviceKind::ALL
        .into_iter()
        .map(|device| {
            let mut precisions = device.precisions().to_vec();
            let reason = if !device.compiled() {
                Some(format!(
                    "this build has no {} support (feature `{}`)",
                    device.name(),
                    device.name()
                ))
            } else {
                match device {
                    DeviceKind::Cuda if gpus.is_empty() => Some("no NVIDIA GPU found".into()),
                    DeviceKind::Metal if !cfg!(target_os = "macos") => {
                        Some("Metal needs macOS".into())
                    }
                    _ => None,
                }
            };
            if device == DeviceKind::Cuda
                && gpus
                    .first()
                    .and_then(|g| g.compute_capability)
                    .is_some_and(|c| c[0] < 8)
            {
                precisions.retain(|p| *p != Precision::Bf16);
            }
            DeviceOption {
                device,
                available: reason.is_none(),
                precisions,
                reason,
            }
        })
        .collect()
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
        devices: devices(&gpus.list()),
        gpus: gpus.list(),
        gpu_message: gpus.unavailable_reason(),
        keychain: doctune_secrets::probe(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_always_offered_and_missing_back_ends_say_why() {
        let d = devices(&[]);
        assert_eq!(d[0].device, DeviceKind::Cpu);
        assert!(d[0].available);
        // f32, and bf16 where the CPU has AVX-512 BF16.
        let mut want = vec![Precision::F32];
        if doctune_models::cpu_bf16().is_ok() {
            want.push(Precision::Bf16);
        }
        assert_eq!(d[0].precisions, want);
        let cuda = &d[1];
        assert!(!cuda.available);
        assert!(cuda
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("cuda") || r.contains("GPU")));
        // A pre-Ampere GPU is not offered bf16.
        let old = GpuInfo {
            index: 0,
            name: "Tesla T4".into(),
            memory_total_bytes: 16 << 30,
            memory_used_bytes: 0,
            utilization_percent: None,
            temperature_c: None,
            power_watts: None,
            compute_capability: Some([7, 5]),
        };
        let cuda = &devices(&[old])[1];
        assert!(!cuda.precisions.contains(&Precision::Bf16));
        assert!(cuda.precisions.contains(&Precision::F16));
    }
}
