//! Which CPU kernel family DocTune's numeric code runs, chosen once per process.
//!
//! By default the best family the CPU has ([`best`]): AVX-512 (AVX-512F, for `gemm`'s AVX-512
//! kernels), else "at most AVX2" (AVX2 with FMA; scalar kernels on a CPU without them). The
//! environment variable [`KERNELS_ENV`] (`DOCTUNE_CPU_KERNELS=avx2|avx512|auto`) forces a family for
//! benchmarking and diagnosis: it is how `cargo bench -p doctune-train --bench train` measures
//! the AVX2 path on a CPU that also has AVX-512. A family the CPU cannot run is refused
//! ([`requested`], which the trainer checks before a run), never executed.
//!
//! The choice applies to DocTune's own f32 GEMM ([`crate::gemm`]), which every frozen
//! projection and the fused attention go through on the CPU.

use std::sync::OnceLock;

/// The environment variable that forces a kernel family.
pub const KERNELS_ENV: &str = "DOCTUNE_CPU_KERNELS";

/// A family of CPU kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kernels {
    /// At most 256-bit AVX2 with FMA (x86-64-v3); the scalar kernels where the CPU lacks them.
    Avx2,
    /// 512-bit AVX-512F (x86-64-v4).
    Avx512,
}

impl Kernels {
    /// The name the switch takes and the benchmarks print.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Avx2 => "avx2",
            Kernels::Avx512 => "avx512",
        }
    }

    /// The GEMM that runs it ([`crate::gemm`]), for benchmark output.
    pub fn implementation(self) -> &'static str {
        match self {
            Kernels::Avx2 => "gemm 0.18 AVX2/FMA",
            Kernels::Avx512 => "gemm 0.19 AVX-512",
        }
    }

    /// Whether this CPU can run the family.
    pub fn available(self) -> bool {
        match self {
            // The capped build runs anywhere (AVX2/FMA where the CPU has them).
            Kernels::Avx2 => true,
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Kernels::Avx512 => false,
        }
    }
}

/// The best family this CPU has.
pub fn best() -> Kernels {
    if Kernels::Avx512.available() {
        Kernels::Avx512
    } else {
        Kernels::Avx2
    }
}

/// Why the family [`KERNELS_ENV`] asks for cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelsError {
    #[error("{KERNELS_ENV}={0}: unknown kernel family (auto, avx512 or avx2)")]
    Unknown(String),
    #[error("{KERNELS_ENV}={family}: this CPU cannot run the {family} kernels (it has: {cpu})")]
    Unavailable { family: &'static str, cpu: String },
}

/// The family [`KERNELS_ENV`] asks for (the best one when it is unset, empty or `auto`), or why
/// it cannot be used: an unknown name, or a family this CPU does not have.
pub fn requested() -> Result<Kernels, KernelsError> {
    parse_request(std::env::var(KERNELS_ENV).ok().as_deref())
}

/// [`requested`] for a given value of the variable.
fn parse_request(v: Option<&str>) -> Result<Kernels, KernelsError> {
    let Some(v) = v else {
        return Ok(best());
    };
    let k = match v.trim().to_ascii_lowercase().as_str() {
        "" | "auto" => return Ok(best()),
        "avx2" => Kernels::Avx2,
        "avx512" | "avx-512" => Kernels::Avx512,
        other => return Err(KernelsError::Unknown(other.to_string())),
    };
    if k.available() {
        Ok(k)
    } else {
        Err(KernelsError::Unavailable {
            family: k.name(),
            cpu: describe_cpu(),
        })
    }
}

/// The family in use, chosen on first call: [`requested`], or the best family if the request
/// cannot be honoured (the trainer refuses such a run before it starts; other callers get the
/// best path and a warning in the log).
pub fn kernels() -> Kernels {
    static CHOSEN: OnceLock<Kernels> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        requested().unwrap_or_else(|e| {
            tracing::warn!("{e}; using the {} kernels", best().name());
            best()
        })
    })
}

/// The CPU features that matter to the kernels, for messages and benchmark output.
pub fn describe_cpu() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut f = Vec::new();
        macro_rules! feat {
            ($($name:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($name) {
                    f.push($name);
                }
            )*};
        }
        feat!("avx2", "fma", "avx512f", "avx512bf16");
        if f.is_empty() {
            "no AVX2".into()
        } else {
            f.join(", ")
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

/// The environment variable candle reads for how long its element-wise thread pool spins
/// before parking (`pause` instructions; candle's default 25,000).
pub const CANDLE_SPIN_ENV: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// How long candle's pool spins here: about a microsecond, then it parks.
pub const CANDLE_SPIN: &str = "100";

/// Sets up the process's thread pools for training; call first in `main`, before any thread
/// exists (it sets an environment variable candle reads once).
///
/// candle runs its element-wise ops on a pool of its own beside rayon's, and by default its
/// threads spin 25,000 `pause`s (half a millisecond or more) after every op before parking.
/// With rayon's threads on every core, that spinning takes a core from the next GEMM: on 2 cores
/// it cost a quarter of a LoRA step on small models (`docs/performance.md`, "candle's spinning
/// pool"). A limit the user set is kept.
pub fn tune_thread_pools() {
    if std::env::var_os(CANDLE_SPIN_ENV).is_none() {
        std::env::set_var(CANDLE_SPIN_ENV, CANDLE_SPIN);
    }
}

/// One line for benchmarks and logs: the family in use and what the CPU has.
pub fn describe() -> String {
    format!(
        "{} kernels, {}; CPU: {}",
        kernels().name(),
        kernels().implementation(),
        describe_cpu()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_takes_auto_and_each_family_and_refuses_the_rest_by_name() {
        assert_eq!(parse_request(None), Ok(best()));
        assert_eq!(parse_request(Some(" Auto ")), Ok(best()));
        assert_eq!(parse_request(Some("avx2")), Ok(Kernels::Avx2));
        let e = parse_request(Some("sse9")).unwrap_err().to_string();
        assert!(
            e.contains("DOCTUNE_CPU_KERNELS=sse9") && e.contains("unknown"),
            "{e}"
        );
        match parse_request(Some("avx512")) {
            Ok(k) => assert!(k == Kernels::Avx512 && k.available()),
            Err(e) => {
                assert!(!Kernels::Avx512.available());
                assert!(
                    e.to_string().contains("cannot run the avx512 kernels"),
                    "{e}"
                );
            }
        }
    }
}
