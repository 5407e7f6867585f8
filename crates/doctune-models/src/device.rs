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

    /// The precisions the app offers on this device. The CPU offers f32, and bf16 where it has
    /// AVX-512 BF16 ([`crate::gemm::bf16`]: the frozen base weights in bf16 under f32
    /// activations, PyTorch's CPU autocast). f16 — which [`Precision::check`] still allows —
    /// runs without DocTune's fused f32 kernels, measured 3.6–4.6× slower with 2.1× the memory
    /// of f32 on the benchmark's small models; it only saves memory where the weights dominate.
    pub fn precisions(self) -> &'static [Precision] {
        match self {
            DeviceKind::Cpu if cpu_bf16().is_ok() => &[Precision::F32, Precision::Bf16],
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
        match cpu_bf16() {
            Err(why) if device == DeviceKind::Cpu && self == Precision::Bf16 => {
                Err(ModelError::Invalid(why.to_string()))
            }
            _ => Err(ModelError::Invalid(format!(
                "{} training is not available on the {}: train in f32",
                self.name(),
                device.label()
            ))),
        }
    }
}

/// Why this process cannot train in bf16 on the CPU ([`cpu_bf16`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuBf16Error {
    #[error("bf16 training on the CPU needs AVX-512 BF16 (Intel Xeon from Cooper Lake and Sapphire Rapids on, AMD Zen 4 and newer); this CPU has: {cpu}. Train in f32 here, or in bf16 on a GPU")]
    NoKernel { cpu: String },
    #[error("bf16 on the CPU runs AVX-512 BF16 kernels, and {}={family} asks for the {family} family only: unset it to train in bf16", crate::cpu::KERNELS_ENV)]
    KernelsForced { family: &'static str },
    #[error(transparent)]
    Kernels(#[from] crate::cpu::KernelsError),
}

/// Whether this process can train in bf16 on the CPU, or why not: it needs AVX-512 BF16 (the
/// bf16 kernel, [`crate::gemm::bf16`]) and the AVX-512 kernel family (`DOCTUNE_CPU_KERNELS`).
pub fn cpu_bf16() -> Result<(), CpuBf16Error> {
    if !crate::gemm::bf16::available() {
        return Err(CpuBf16Error::NoKernel {
            cpu: crate::cpu::describe_cpu(),
        });
    }
    match crate::cpu::requested()? {
        crate::cpu::Kernels::Avx512 => Ok(()),
        k => Err(CpuBf16Error::KernelsForced { family: k.name() }),
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
    fn the_cpu_offers_bf16_where_it_has_the_kernel_and_absent_back_ends_say_how_to_get_them() {
        assert!(Precision::F32.check(DeviceKind::Cpu).is_ok());
        assert!(Precision::F16.check(DeviceKind::Cpu).is_ok());
        assert!(Precision::Bf16.check(DeviceKind::Cuda).is_ok());
        let offered = DeviceKind::Cpu.precisions().contains(&Precision::Bf16);
        match Precision::Bf16.check(DeviceKind::Cpu) {
            Ok(()) => assert!(offered && crate::gemm::bf16::available()),
            Err(e) => {
                let e = e.to_string();
                assert!(!offered, "{e}");
                assert!(
                    e.contains("AVX-512 BF16") && e.contains("f32"),
                    "the refusal says what is missing and what to do: {e}"
                );
            }
        }
        assert!(DeviceKind::Cpu.open().unwrap().is_cpu());
        if !cfg!(feature = "cuda") {
            let e = DeviceKind::Cuda.open().unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
