//! Test and benchmark support for DocTune's crates. A dev-dependency only: no product crate
//! depends on it (`scripts/check-architecture` checks), so the loopback server in [`hub`] never
//! ships.
//!
//! - [`hub`]: tiny model folders and a loopback server in the Hugging Face Hub's layout (the
//!   `fake-hub` binary runs it as a process for the app's end-to-end tests);
//! - [`models`]: random Llama-style model folders of any size;
//! - [`demo_corpus`]: the demo corpus's PDF and DOCX, made from its Markdown pages;
//! - [`hostile`]: one generated input per class of hostile document or model folder, and what
//!   DocTune must make of it (the `hostile-inputs` binary writes them out);
//! - [`bench`]: the benchmarks' peak-memory reading, worker runner and options;
//! - [`max_abs_diff`]: the largest difference between two tensors, which the numerical tests of
//!   several crates compare by.

pub mod bench;
pub mod demo_corpus;
pub mod hostile;
pub mod hub;
pub mod models;

/// The largest absolute difference between two tensors of the same shape and any float dtype
/// (computed in f64).
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let diff = || -> candle_core::Result<f64> {
        (a.to_dtype(candle_core::DType::F64)? - b.to_dtype(candle_core::DType::F64)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()
    };
    diff().expect("tensors on the CPU")
}
