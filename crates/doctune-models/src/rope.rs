//! Rotary position embeddings: the inverse frequencies of each scaling type, computed as
//! transformers' `ROPE_INIT_FUNCTIONS` compute them, and the cos/sin tables for a range of
//! positions.

use crate::config::{ModelConfig, RopeScaling};
use candle_core::{DType, Device, Result, Tensor};

/// Inverse frequencies and post-scaling of one model.
#[derive(Debug, Clone)]
pub struct Rotary {
    inv_freq: Vec<f64>,
    /// LongRoPE: used instead of `inv_freq` once a forward pass reaches past
    /// `original` positions.
    long: Option<(Vec<f64>, usize)>,
    scaling: f64,
}

fn base_inv_freq(theta: f64, rot_dim: usize) -> Vec<f64> {
    (0..rot_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / rot_dim as f64))
        .collect()
}

impl Rotary {
    pub fn new(cfg: &ModelConfig) -> Self {
        let rot_dim = cfg.rotary_dim();
        let base = base_inv_freq(cfg.rope_theta, rot_dim);
        match &cfg.rope_scaling {
            RopeScaling::Default => Self {
                inv_freq: base,
                long: None,
                scaling: 1.0,
            },
            RopeScaling::Linear { factor } => Self {
                inv_freq: base.iter().map(|f| f / factor).collect(),
                long: None,
                scaling: 1.0,
            },
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                let inv_freq = base
                    .iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect();
                Self {
                    inv_freq,
                    long: None,
                    scaling: 1.0,
                }
            }
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                attention_factor,
            } => {
                let with = |ext: &[f64]| base.iter().zip(ext).map(|(f, e)| f / e).collect();
                Self {
                    inv_freq: with(short_factor),
                    long: Some((with(long_factor), *original_max_position_embeddings)),
                    scaling: *attention_factor,
                }
            }
        }
    }

    /// `(cos, sin)`, each [len, rot_dim] in `dtype`, for positions `start..start + len`.
    /// LongRoPE picks its long factors when this pass reaches beyond the original context (as
    /// transformers decides per forward call from the largest position id).
    pub fn cos_sin(
        &self,
        start: usize,
        len: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let inv_freq = match &self.long {
            Some((long, original)) if start + len > *original => long,
            _ => &self.inv_freq,
        };
        // In f32, as torch computes `inv_freq @ positions` and `cos`.
        let inv: Vec<f32> = inv_freq.iter().map(|&f| f as f32).collect();
        let half = inv.len();
        let mut cos = Vec::with_capacity(len * 2 * half);
        let mut sin = Vec::with_capacity(len * 2 * half);
        let scale = self.scaling as f32;
        for p in start..start + len {
            let row: Vec<f32> = inv.iter().map(|f| p as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(row.iter().map(|a| a.cos() * scale));
                sin.extend(row.iter().map(|a| a.sin() * scale));
            }
        }
        let cos = Tensor::from_vec(cos, (len, 2 * half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (len, 2 * half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}
