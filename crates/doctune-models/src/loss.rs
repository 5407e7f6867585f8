//! The causal language-modelling loss, as transformers computes it with `labels`: logits at
//! position t predict the token at t + 1, positions whose label is masked are left out, and the
//! mean is taken over the positions that count.

use candle_core::{DType, Result, Tensor, D};

/// Mean cross-entropy of `logits` [B, T, V] against `ids` [B, T] shifted by one, counting only
/// positions where `mask` [B, T] (of the *target* tokens) is 1; `None` counts all.
pub fn causal_lm_loss(logits: &Tensor, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    if t < 2 {
        candle_core::bail!("a sequence of {t} token(s) has nothing to predict");
    }
    let pred = logits.narrow(1, 0, t - 1)?.reshape((b * (t - 1), v))?;
    let target = ids.narrow(1, 1, t - 1)?.reshape(b * (t - 1))?;
    let logp = log_softmax(&pred.to_dtype(DType::F32)?)?;
    let picked = logp
        .gather(&target.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    match mask {
        None => picked.mean_all()?.neg(),
        Some(m) => {
            let m = m
                .narrow(1, 1, t - 1)?
                .reshape(b * (t - 1))?
                .to_dtype(DType::F32)?;
            let count = m.sum_all()?.to_scalar::<f32>()?;
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
