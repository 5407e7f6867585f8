//! The person's defaults, kept in `<home>/preferences.json` (written atomically): the device and
//! precision a run uses unless it says otherwise. Unset, a run takes the best device this build
//! and machine offer ([`default_device`]); a saved device that is no longer
//! available (the GPU was removed, a CPU-only build) falls back the same way, so a preference
//! never makes a run fail.

use crate::{ApiError, Home};
use doctune_core::{write_json_atomic, Code};
use doctune_gpu::GpuInfo;
use doctune_models::{DeviceKind, Precision};
use doctune_train::RunOverrides;
use serde::{Deserialize, Serialize};

/// What `preferences.json` holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    /// The device runs use by default (`None`: the best one available).
    #[serde(default)]
    pub device: Option<DeviceKind>,
    /// Their precision (`None`: the device's best).
    #[serde(default)]
    pub precision: Option<Precision>,
}

/// The saved preferences (the defaults when none were saved).
pub fn read(home: &Home) -> Result<Preferences, ApiError> {
    let path = home.preferences_file();
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            ApiError::new(
                Code::Internal,
                format!(
                    "{}: not valid preferences ({e}); delete it to start over",
                    path.display()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Preferences::default()),
        Err(e) => Err(ApiError::io(&path, "cannot read", &e)),
    }
}

/// Saves `prefs`, refusing a precision its device does not have.
pub fn write(home: &Home, prefs: &Preferences) -> Result<(), ApiError> {
    if let (Some(d), Some(p)) = (prefs.device, prefs.precision) {
        if !d.precisions().contains(&p) {
            return Err(ApiError::invalid(format!(
                "{} runs do not take {} precision",
                d.name(),
                p.name()
            )));
        }
    }
    std::fs::create_dir_all(home.root())
        .map_err(|e| ApiError::io(home.root(), "cannot create", &e))?;
    let path = home.preferences_file();
    write_json_atomic(&path, prefs).map_err(|e| ApiError::io(&path, "cannot write", &e))
}

/// The device a run uses unless told otherwise: the first NVIDIA GPU or Apple GPU this build
/// can use, else the CPU; in bf16 where the GPU has it, f16 on an older GPU, f32 on the CPU.
pub fn default_device(gpus: &[GpuInfo]) -> (DeviceKind, Precision) {
    let options = crate::doctor::devices(gpus);
    let pick = [DeviceKind::Cuda, DeviceKind::Metal]
        .into_iter()
        .find_map(|d| options.iter().find(|o| o.device == d && o.available));
    match pick {
        Some(o) => {
            let p = [Precision::Bf16, Precision::F16]
                .into_iter()
                .find(|p| o.precisions.contains(p))
                .unwrap_or(Precision::F32);
            (o.device, p)
        }
        None => (DeviceKind::Cpu, Precision::F32),
    }
}

/// The device and precision a run uses when it names neither: the saved preference while its
/// device is available here, else the best this build and machine offer.
pub fn training_device(home: &Home, gpus: &[GpuInfo]) -> (DeviceKind, Precision) {
    let best = default_device(gpus);
    let prefs = read(home).unwrap_or_else(|e| {
        tracing::warn!("{}", e.message);
        Preferences::default()
    });
    let options = crate::doctor::devices(gpus);
    let Some(device) = prefs.device else {
        return best;
    };
    let Some(option) = options.iter().find(|o| o.device == device && o.available) else {
        return best;
    };
    let precision = prefs
        .precision
        .filter(|p| option.precisions.contains(p))
        .unwrap_or(if device == best.0 {
            best.1
        } else {
            option.precisions[0]
        });
    (device, precision)
}

/// Fills in the device and precision of `overrides` that the run did not choose.
pub fn apply(home: &Home, gpus: &[GpuInfo], overrides: &mut RunOverrides) {
    if overrides.device.is_none() {
        let (d, p) = training_device(home, gpus);
        overrides.device = Some(d);
        overrides.precision = overrides.precision.or(Some(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_round_trip_and_fall_back_to_what_is_available() {
        let d = tempfile::tempdir().unwrap();
        let home = Home::at(d.path().join("home"));
        assert_eq!(read(&home).unwrap(), Preferences::default());
        // No GPU here: the CPU in f32.
        assert_eq!(
            training_device(&home, &[]),
            (DeviceKind::Cpu, Precision::F32)
        );
        let cpu_bf16 = Preferences {
            device: Some(DeviceKind::Cpu),
            precision: Some(Precision::Bf16),
        };
        if DeviceKind::Cpu.precisions().contains(&Precision::Bf16) {
            write(&home, &cpu_bf16).unwrap();
            assert_eq!(read(&home).unwrap(), cpu_bf16);
            assert_eq!(
                training_device(&home, &[]),
                (DeviceKind::Cpu, Precision::Bf16)
            );
        }
        // A saved GPU that this machine does not have falls back to the best available.
        write(
            &home,
            &Preferences {
                device: Some(DeviceKind::Cuda),
                precision: None,
            },
        )
        .unwrap();
        assert_eq!(
            training_device(&home, &[]),
            (DeviceKind::Cpu, Precision::F32)
        );
        // Only the gaps are filled.
        let mut o = RunOverrides::default();
        apply(&home, &[], &mut o);
        assert_eq!(
            (o.device, o.precision),
            (Some(DeviceKind::Cpu), Some(Precision::F32))
        );
        let mut o = RunOverrides {
            device: Some(DeviceKind::Metal),
            ..Default::default()
        };
        apply(&home, &[], &mut o);
        assert_eq!((o.device, o.precision), (Some(DeviceKind::Metal), None));
        // A broken file is named.
        std::fs::write(home.preferences_file(), "{").unwrap();
        assert!(read(&home)
            .unwrap_err()
            .message
            .contains("preferences.json"));
    }
}
