//! The causal language-modelling loss, as transformers computes it with `labels`: logits at
//! position t predict the token at t + 1, positions whose label is masked are left out, and the
//! mean is taken over the positions that count.
//!
//! On the CPU (f32/f64 logits) the loss is one fused op ([`CrossEntropyOp`]) that reads the
//! logits in place and keeps one log-sum-exp per position for its backward pass; the
//! composition (log-softmax, gather, masked mean) kept four more tensors of the logits' size,
//! the largest of a step with a big vocabulary. Elsewhere the composition runs.

use crate::ops::{slice, with_slice};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use num_traits::Float;
use rayon::prelude::*;
use std::sync::Mutex;

/// Mean cross-entropy of `logits` [B, T, V] against `ids` [B, T] shifted by one, counting only
/// positions where `mask` [B, T] (of the *target* tokens) is 1; `None` counts all.
pub fn causal_lm_loss(logits: &Tensor, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    if t < 2 {
        candle_core::bail!("a sequence of {t} token(s) has nothing to predict");
    }
    if !(logits.device().is_cpu() && matches!(logits.dtype(), DType::F32 | DType::F64)) {
        return causal_lm_loss_composed(logits, ids, mask);
    }
    let ids: Vec<u32> = ids.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
    if ids.len() != b * t {
        candle_core::bail!("{} ids for logits of {b}×{t} positions", ids.len());
    }
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= v) {
        candle_core::bail!("token id {bad} is outside the vocabulary of {v}");
    }
    let keep: Vec<f32> = match mask {
        Some(m) => m.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
        None => vec![1.0; b * t],
    };
    // Row (b, p) predicts ids[b, p + 1] with the weight of that target; the last position of
    // each sequence predicts nothing.
    let mut targets = vec![0u32; b * t];
    let mut weights = vec![0f64; b * t];
    for row in 0..b {
        for p in 0..t - 1 {
            targets[row * t + p] = ids[row * t + p + 1];
            weights[row * t + p] = f64::from(keep[row * t + p + 1]);
        }
    }
    let count: f64 = weights.iter().sum();
    if count == 0.0 {
        candle_core::bail!("every target position is masked: nothing to learn from");
    }
    weights.iter_mut().for_each(|w| *w /= count);
    logits.contiguous()?.apply_op1(CrossEntropyOp {
        targets,
        weights,
        lse: Mutex::new(Vec::new()),
    })
}

/// The same loss as a composition of candle ops (the GPU path and the tests' reference).
pub fn causal_lm_loss_composed(
    logits: &Tensor,
    ids: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    if t < 2 {
        candle_core::bail!("a sequence of {t} token(s) has nothing to predict");
    }
    let pred = logits.narrow(1, 0, t - 1)?.reshape((b * (t - 1), v))?;
    let target = ids.narrow(1, 1, t - 1)?.reshape(b * (t - 1))?;
    // In f32 as transformers computes it (f64 logits stay f64).
    let wide = if logits.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let logp = log_softmax(&pred.to_dtype(wide)?)?;
    let picked = logp
        .gather(&target.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    match mask {
        None => picked.mean_all()?.neg(),
        Some(m) => {
            let m = m
                .narrow(1, 1, t - 1)?
                .reshape(b * (t - 1))?
                .to_dtype(wide)?;
            let count = m.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
            if count == 0.0 {
                candle_core::bail!("every target position is masked: nothing to learn from");
            }
            ((picked * m)?.sum_all()? / f64::from(count))?.neg()
        }
    }
}

/// `log softmax` over the last dimension, differentiable (max detached; it cancels).
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// `Σ_rows weight · (logsumexp(row) − row[target])` over logits [.., V], a scalar. Backward:
/// `∂row = g · weight · (softmax(row) − onehot(target))`.
struct CrossEntropyOp {
    targets: Vec<u32>,
    /// Per row; 0 for rows that do not count (their gradient is zero).
    weights: Vec<f64>,
    /// Log-sum-exp of every counted row, from the forward pass.
    lse: Mutex<Vec<f64>>,
}

impl CrossEntropyOp {
    fn fwd<T: Float + Send + Sync + 'static>(&self, x: &[T], v: usize) -> f64 {
        let per_row: Vec<(f64, f64)> = x
            .par_chunks(v)
            .zip(self.targets.par_iter().zip(self.weights.par_iter()))
            .map(|(row, (&t, &w))| {
                if w == 0.0 {
                    return (0.0, 0.0);
                }
                let max = crate::simd::max(row);
                let sum = crate::simd::sum_exp_sub_any(row, max);
                let lse = (max + sum.ln()).to_f64().unwrap_or(f64::NAN);
                let picked = row[t as usize].to_f64().unwrap_or(f64::NAN);
                (lse, w * (lse - picked))
            })
            .collect();
        let total = per_row.iter().map(|(_, l)| l).sum();
        *self.lse.lock().unwrap_or_else(|e| e.into_inner()) =
            per_row.into_iter().map(|(lse, _)| lse).collect();
        total
    }

    fn bwd_rows<T: Float + Send + Sync + 'static>(&self, x: &[T], v: usize, g: f64) -> Vec<T> {
        let lse = self.lse.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(v)
            .zip(x.par_chunks(v))
            .enumerate()
            .for_each(|(i, (o, row))| {
                let w = self.weights[i];
                if w == 0.0 {
                    return;
                }
                let scale = T::from(g * w).unwrap_or_else(T::zero);
                let l = T::from(lse[i]).unwrap_or_else(T::zero);
                o.copy_from_slice(row);
                crate::simd::exp_sub_sum_any(o, l);
                o.iter_mut().for_each(|o| *o = *o * scale);
                let t = self.targets[i] as usize;
                o[t] = o[t] - scale;
            });
        out
    }
}

impl CustomOp1 for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let v = (*l.dims().last().unwrap_or(&1)).max(1);
        let n = l.shape().elem_count();
        if n / v != self.targets.len() {
            candle_core::bail!(
                "cross-entropy: {} rows for {} targets",
                n / v,
                self.targets.len()
            );
        }
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(vec![self.fwd(slice::<f32>(s, l)?, v) as f32]),
            CpuStorage::F64(_) => CpuStorage::F64(vec![self.fwd(slice::<f64>(s, l)?, v)]),
            _ => candle_core::bail!("fused cross-entropy: f32 or f64 only"),
        };
        Ok((out, Shape::from(())))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let v = x.dim(D::Minus1)?;
        let dx = match x.dtype() {
            DType::F32 => with_slice::<f32, _>(x, |xs| {
                Tensor::from_vec(self.bwd_rows(xs, v, g), x.shape(), x.device())
            })?,
            DType::F64 => with_slice::<f64, _>(x, |xs| {
                Tensor::from_vec(self.bwd_rows(xs, v, g), x.shape(), x.device())
            })?,
            dt => candle_core::bail!("fused cross-entropy: {dt:?} not supported"),
        };
        Ok(Some(dx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::max_diff;
    use candle_core::{Device, Var};

    fn setup(dtype: DType) -> (Var, Tensor, Tensor) {
        let (b, t, v) = (2, 5, 7);
        let x: Vec<f64> = crate::rng::normal_vec(b * t * v, 2.0, 3)
            .into_iter()
            .map(f64::from)
            .collect();
        let logits = Var::from_vec(x, (b, t, v), &Device::Cpu).unwrap();
        let logits = Var::from_tensor(&logits.to_dtype(dtype).unwrap()).unwrap();
        let ids =
            Tensor::from_vec(vec![1u32, 6, 0, 3, 3, 2, 5, 4, 0, 1], (b, t), &Device::Cpu).unwrap();
        let mask =
            Tensor::from_vec(vec![0u8, 1, 1, 0, 1, 0, 0, 1, 1, 1], (b, t), &Device::Cpu).unwrap();
        (logits, ids, mask)
    }

    #[test]
    fn fused_loss_matches_the_composition_with_and_without_mask() {
        for dtype in [DType::F64, DType::F32] {
            let (logits, ids, mask) = setup(dtype);
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-6 };
            for m in [None, Some(&mask)] {
                let fused = causal_lm_loss(&logits, &ids, m).unwrap();
                let composed = causal_lm_loss_composed(&logits, &ids, m).unwrap();
                assert!(max_diff(&fused, &composed) < tol);
                let g1 = fused.backward().unwrap();
                let g2 = composed.backward().unwrap();
                let d = max_diff(g1.get(&logits).unwrap(), g2.get(&logits).unwrap());
                assert!(d < tol, "{dtype:?}: gradients differ by {d}");
            }
        }
    }

    #[test]
    fn fused_loss_gradient_matches_finite_differences() {
        let (logits, ids, mask) = setup(DType::F64);
        let grads = causal_lm_loss(&logits, &ids, Some(&mask))
            .unwrap()
            .backward()
            .unwrap();
        let loss = |x: &Tensor| {
            causal_lm_loss(x, &ids, Some(&mask))
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        crate::ops::test_util::assert_finite_differences(
            &logits,
            grads.get(&logits).unwrap(),
            loss,
            1e-8,
            "logits",
        );
    }

    #[test]
    fn bad_ids_and_empty_masks_are_errors() {
        let (logits, _, _) = setup(DType::F32);
        let ids = Tensor::from_vec(vec![9u32; 10], (2, 5), &Device::Cpu).unwrap();
        let e = causal_lm_loss(&logits, &ids, None).unwrap_err().to_string();
        assert!(e.contains("outside the vocabulary of 7"), "{e}");
        let ids = Tensor::from_vec(vec![1u32; 10], (2, 5), &Device::Cpu).unwrap();
        let none = Tensor::zeros((2, 5), DType::U8, &Device::Cpu).unwrap();
        let e = causal_lm_loss(&logits, &ids, Some(&none))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nothing to learn"), "{e}");
    }
}
