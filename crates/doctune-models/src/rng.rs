//! Seeded randomness. candle's CPU device cannot be seeded (`Device::Cpu.set_seed` fails) and
//! `VarMap` initialises from an unseeded RNG, so every random number DocTune's models use — LoRA
//! initialisation, dropout masks, sampling — comes from a ChaCha8 generator with an explicit
//! seed, which also makes the state easy to checkpoint.

use rand::{Rng, SeedableRng};
pub use rand_chacha::ChaCha8Rng as ModelRng;

/// A generator from a seed.
pub fn seeded(seed: u64) -> ModelRng {
    ModelRng::seed_from_u64(seed)
}

/// `n` samples of N(0, std²) (Box–Muller).
pub fn normal_vec(n: usize, std: f32, seed: u64) -> Vec<f32> {
    let mut rng = seeded(seed);
    normal_from(&mut rng, n, std)
}

/// `n` samples of N(0, std²) from `rng`.
pub fn normal_from(rng: &mut ModelRng, n: usize, std: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32 * std);
        out.push((r * t.sin()) as f32 * std);
    }
    out.truncate(n);
    out
}

/// `n` samples of U(-bound, bound).
pub fn uniform_from(rng: &mut ModelRng, n: usize, bound: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * bound)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn normal_is_seeded_and_standard() {
        let a = super::normal_vec(20_000, 1.0, 5);
        assert_eq!(a, super::normal_vec(20_000, 1.0, 5));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let var = a.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / a.len() as f32;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
