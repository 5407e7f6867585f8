//! Where a model computes and in what precision, as the user names them (`cpu`, `cuda`,
//! `metal`; `f32`, `bf16`, `f16`), with the errors that say what is missing when a device
//! cannot be opened.
//!
//! Half precision here is mixed precision: the base weights and activations are bf16 or f16,
//! while trained values (LoRA matrices, fully trained weights), their gradients and the
//! optimiser's state stay f32 ([`crate::linear::master_dtype`]).

use crate::ModelError;
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

/// A compute device. GPUs are opened by ordinal 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
    Metal,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 3] = [DeviceKind::Cpu, DeviceKind::Cuda, DeviceKind::Metal];

    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Metal => "metal",
        }
    }

    /// Whether this build of DocTune has the back end (the `cuda` / `metal` features).
    pub fn compiled(self) -> bool {
        match self {
            DeviceKind::Cpu => true,
            DeviceKind::Cuda => cfg!(feature = "cuda"),
            DeviceKind::Metal => cfg!(feature = "metal"),
        }
    }

    /// The precisions the app offers on this device. The CPU offers f32 only: candle's CPU
    /// matrix multiply has no bf16 kernel, and f16 — which [`Precision::check`] still allows —
    /// runs without DocTune's fused f32 kernels, measured 3.6–4.6× slower with 2.1× the memory
    /// of f32 on the benchmark's small models; it only saves memory where the weights dominate.
    pub fn precisions(self) -> &'static [Precision] {
        match self {
            DeviceKind::Cpu => &[Precision::F32],
            DeviceKind::Cuda | DeviceKind::Metal => {
                &[Precision::F32, Precision::Bf16, Precision::F16]
            }
        }
    }

    /// Opens the device, or says why it cannot be.
    pub fn open(self) -> Result<Device, ModelError> {
        if !self.compiled() {
            return Err(ModelError::Invalid(format!(
                "this build of DocTune has no {} support: build it with `--features {}`",
                self.label(),
                self.name()
            )));
        }
        let opened = match self {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda => Device::new_cuda(0),
            DeviceKind::Metal => Device::new_metal(0),
        };
        opened.map_err(|e| {
            ModelError::Invalid(format!(
                "cannot open the {} device: {e}{}",
                self.label(),
                match self {
                    DeviceKind::Cuda => " (is an NVIDIA GPU with its driver present?)",
                    DeviceKind::Metal => " (is this a Mac with Metal?)",
                    DeviceKind::Cpu => "",
                }
            ))
        })
    }

    fn label(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "CPU",
            DeviceKind::Cuda => "CUDA",
            DeviceKind::Metal => "Metal",
        }
    }
}

/// The precision of the base weights and activations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::F16];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    /// Bytes per element.
    pub fn bytes(self) -> u64 {
        self.dtype().size_in_bytes() as u64
    }

    /// Whether `device` can train in this precision, with the reason when it cannot.
    pub fn check(self, device: DeviceKind) -> Result<(), ModelError> {
        if device.precisions().contains(&self) || self == Precision::F16 {
            return Ok(());
        }
        Err(ModelError::Invalid(format!(
            "{} training needs a GPU: candle's CPU matrix multiply has no {} kernel; on the CPU train in f32 (or f16, which halves the base weights' memory)",
            self.name(),
            self.name()
        )))
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                ModelError::Invalid(format!("unknown device `{s}` (cpu, cuda or metal)"))
            })
    }
}

impl std::str::FromStr for Precision {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                ModelError::Invalid(format!("unknown precision `{s}` (f32, bf16 or f16)"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_named() {
        for d in DeviceKind::ALL {
            assert_eq!(d.name().parse::<DeviceKind>().unwrap(), d);
            assert_eq!(
                serde_json::to_value(d).unwrap(),
                serde_json::json!(d.name())
            );
        }
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            assert_eq!(
                serde_json::to_value(p).unwrap(),
                serde_json::json!(p.name())
            );
        }
        assert_eq!(" CUDA ".parse::<DeviceKind>().unwrap(), DeviceKind::Cuda);
        assert!("tpu"
            .parse::<DeviceKind>()
            .unwrap_err()
            .to_string()
            .contains("`tpu`"));
        assert!("fp8"
            .parse::<Precision>()
            .unwrap_err()
            .to_string()
            .contains("`fp8`"));
    }

    #[test]
    fn the_cpu_refuses_bf16_and_absent_back_ends_say_how_to_get_them() {
        assert!(Precision::F32.check(DeviceKind::Cpu).is_ok());
        assert!(Precision::F16.check(DeviceKind::Cpu).is_ok());
        assert!(Precision::Bf16.check(DeviceKind::Cuda).is_ok());
        let e = Precision::Bf16
            .check(DeviceKind::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bf16") && e.contains("GPU"), "{e}");
        assert!(DeviceKind::Cpu.open().unwrap().is_cpu());
        if !cfg!(feature = "cuda") {
            let e = DeviceKind::Cuda.open().unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
