//! Hardware readings. Nothing here fails: a machine without an NVIDIA driver has an empty GPU
//! list and a sentence saying why, and a value the OS will not give is `None`.
//!
//! [`Gpus`] holds the NVML handle; keep one in the app's managed state (not a static) and ask it
//! for [`Gpus::list`] as often as a view needs (about once a second).

use serde::Serialize;
use std::path::Path;

/// One NVIDIA GPU's readings at a moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub utilization_percent: Option<u32>,
    pub temperature_c: Option<u32>,
    /// Board power draw in watts.
    pub power_watts: Option<f64>,
    /// CUDA compute capability (`[8, 0]` for an A100); bf16 needs 8.0 or newer.
    pub compute_capability: Option<[u32; 2]>,
}

/// Why NVML did not start, for people. A machine without the NVIDIA driver (the library cannot
/// be loaded, or the driver is not loaded) simply has no NVIDIA GPU; the loader's own error
/// (a `dlopen` message) would only confuse.
fn reason(e: &nvml_wrapper::error::NvmlError) -> String {
    use nvml_wrapper::error::NvmlError;
    match e {
        NvmlError::LibloadingError(_) | NvmlError::DriverNotLoaded | NvmlError::LibraryNotFound => {
            "no NVIDIA GPU found — training runs on the CPU".to_string()
        }
        other => format!("no NVIDIA GPU readings (NVML: {other}) — training runs on the CPU"),
    }
}

/// The NVML handle, or why there is none.
pub struct Gpus {
    nvml: Result<nvml_wrapper::Nvml, String>,
}

impl std::fmt::Debug for Gpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpus")
            .field("nvml", &self.nvml.as_ref().map(|_| "loaded"))
            .finish()
    }
}

impl Gpus {
    /// Loads NVML if the NVIDIA driver provides it.
    pub fn init() -> Self {
        Self {
            nvml: nvml_wrapper::Nvml::init().map_err(|e| reason(&e)),
        }
    }

    /// Why there are no GPU readings, when there are none, in words for people: no driver
    /// means no NVIDIA GPU, said plainly; anything else names what NVML said.
    pub fn unavailable_reason(&self) -> Option<String> {
        self.nvml.as_ref().err().cloned()
    }

    /// The GPUs NVML sees, with the readings it could take. Empty without a driver.
    pub fn list(&self) -> Vec<GpuInfo> {
        let Ok(nvml) = &self.nvml else {
            return Vec::new();
        };
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|i| {
                let d = nvml.device_by_index(i).ok()?;
                let mem = d.memory_info().ok();
                Some(GpuInfo {
                    index: i,
                    name: d.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
                    memory_total_bytes: mem.as_ref().map_or(0, |m| m.total),
                    memory_used_bytes: mem.as_ref().map_or(0, |m| m.used),
                    utilization_percent: d.utilization_rates().ok().map(|u| u.gpu),
                    temperature_c: d
                        .temperature(nvml_wrapper::enum_wrappers::device::TemperatureSensor::Gpu)
                        .ok(),
                    power_watts: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                    compute_capability: d
                        .cuda_compute_capability()
                        .ok()
                        .and_then(|c| Some([c.major.try_into().ok()?, c.minor.try_into().ok()?])),
                })
            })
            .collect()
    }

    /// GPU memory that process `pid` holds on GPU `index` (NVML's per-process figure; `None`
    /// without a driver, or where the driver does not report it, as under Windows' WDDM).
    pub fn process_memory_bytes(&self, index: u32, pid: u32) -> Option<u64> {
        let d = self.nvml.as_ref().ok()?.device_by_index(index).ok()?;
        d.running_compute_processes()
            .ok()?
            .into_iter()
            .find(|p| p.pid == pid)
            .and_then(|p| match p.used_gpu_memory {
                nvml_wrapper::enums::device::UsedGpuMemory::Used(b) => Some(b),
                nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => None,
            })
    }

    /// Free memory of GPU `index`, if NVML can tell.
    pub fn free_memory_bytes(&self, index: u32) -> Option<u64> {
        let d = self.nvml.as_ref().ok()?.device_by_index(index).ok()?;
        d.memory_info().ok().map(|m| m.free)
    }
}

/// The machine: OS, CPU and memory.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemInfo {
    pub os: String,
    pub kernel: Option<String>,
    pub arch: String,
    pub cpu: String,
    pub logical_cores: usize,
    pub physical_cores: Option<usize>,
    pub total_memory_bytes: u64,
    pub available_memory_bytes: u64,
}

/// Reads OS, CPU and memory figures.
pub fn system_info() -> SystemInfo {
    use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let cpu = sys
        .cpus()
        .first()
        .map(|c| c.brand().trim().to_owned())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "unknown CPU".into());
    SystemInfo {
        os: System::long_os_version().unwrap_or_else(|| std::env::consts::OS.into()),
        kernel: System::kernel_version(),
        arch: std::env::consts::ARCH.into(),
        cpu,
        logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        physical_cores: System::physical_core_count(),
        total_memory_bytes: sys.total_memory(),
        available_memory_bytes: sys.available_memory(),
    }
}

/// Free bytes on the filesystem that holds `path`: `statvfs` where the system has it
/// ([`doctune_core::space::free_bytes`]), else the mount point with the longest matching prefix
/// in the system's disk list; `None` if it cannot be told.
pub fn free_disk_bytes(path: &Path) -> Option<u64> {
    if doctune_core::space::assume_unknown() {
        return None;
    }
    if let Some(free) = doctune_core::space::free_bytes(path) {
        return Some(free);
    }
    let path = path.canonicalize().ok()?;
    let disks = sysinfo::Disks::new_with_refreshed_list();
    disks
        .list()
        .iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| d.available_space())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_without_the_driver_is_told_so_in_plain_words() {
        use nvml_wrapper::error::NvmlError;
        for e in [NvmlError::DriverNotLoaded, NvmlError::LibraryNotFound] {
            assert_eq!(reason(&e), "no NVIDIA GPU found — training runs on the CPU");
        }
        let other = reason(&NvmlError::NoPermission);
        assert!(
            other.starts_with("no NVIDIA GPU readings (NVML: "),
            "{other}"
        );
    }

    #[test]
    fn gpus_never_fail_and_explain_an_empty_list() {
        let g = Gpus::init();
        let list = g.list();
        // On a machine without a driver (CI) the list is empty and a reason is given;
        // on a GPU machine there is no reason and at least one device.
        assert_eq!(list.is_empty(), g.unavailable_reason().is_some());
        for gpu in &list {
            assert!(gpu.memory_total_bytes >= gpu.memory_used_bytes);
        }
        // Our process runs nothing on a GPU.
        assert_eq!(g.process_memory_bytes(0, std::process::id()), None);
        assert_eq!(g.free_memory_bytes(0).is_some(), !list.is_empty());
    }

    #[test]
    fn system_info_is_plausible() {
        let s = system_info();
        assert!(s.logical_cores >= 1);
        assert!(s.total_memory_bytes > 0);
        assert!(s.available_memory_bytes <= s.total_memory_bytes);
        assert!(!s.os.is_empty());
    }

    #[test]
    fn free_disk_of_a_temp_dir() {
        let d = tempfile::tempdir().unwrap();
        // Containers can hide mount points from sysinfo; when known it must be positive.
        if let Some(free) = free_disk_bytes(d.path()) {
            assert!(free > 0);
        }
        // A folder not made yet: the free space of the disk it will be made on.
        assert_eq!(
            free_disk_bytes(&d.path().join("missing")).is_some(),
            free_disk_bytes(d.path()).is_some()
        );
    }
}
