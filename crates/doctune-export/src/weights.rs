//! The merged model's weights, one tensor at a time: the base model's tensor (memory-mapped),
//! with the LoRA update `scale · B·A` added to the weights it adapted — or, for a full
//! fine-tuning run, the checkpoint's trained tensor in its place. Each tensor is read, merged and
//! checked (no NaN or infinity) on its own, so an export's memory is bounded by its largest
//! tensors, not by the model.

use crate::source::{Source, Trained};
use crate::ExportError;
use candle_core::{DType, Device, Tensor};
use doctune_models::WeightReader;
use rayon::prelude::*;

/// The weights of a run's merged model.
#[derive(Debug)]
pub struct MergedWeights<'a> {
    src: &'a Source,
    base: WeightReader,
    names: Vec<String>,
}

/// Where a tensor sits in a model, for a stable order (embeddings, layers by number, final
/// norm, head, anything else).
fn order_key(name: &str) -> (u8, usize, String) {
    if name.starts_with("model.embed_tokens") {
        return (0, 0, name.into());
    }
    if let Some(rest) = name.strip_prefix("model.layers.") {
        let (n, tail) = rest.split_once('.').unwrap_or((rest, ""));
        if let Ok(n) = n.parse() {
            return (1, n, tail.into());
        }
    }
    if name.starts_with("model.norm") {
        return (2, 0, name.into());
    }
    if name.starts_with("lm_head") {
        return (3, 0, name.into());
    }
    (4, 0, name.into())
}

impl Source {
    /// The merged model's weights, one tensor at a time.
    pub fn weights(&self) -> Result<MergedWeights<'_>, ExportError> {
        MergedWeights::new(self)
    }
}

impl<'a> MergedWeights<'a> {
    pub(crate) fn new(src: &'a Source) -> Result<Self, ExportError> {
        let base = WeightReader::model(&src.base_dir)?;
        let mut names: Vec<String> = base.names().map(str::to_owned).collect();
        names.sort_by_key(|n| order_key(n));
        match &src.trained {
            Trained::Lora(lora) => {
                for (module, (a, b)) in &lora.modules {
                    let weight = format!("{module}.weight");
                    let shape = if base.contains(&weight) {
                        base.shape(&weight)?
                    } else {
                        return Err(ExportError::Input {
                            path: src.run_dir.clone(),
                            message: format!(
                                "the adapter adapts `{module}`, which the base model {} does not have",
                                src.base_dir.display()
                            ),
                        });
                    };
                    if shape != [b.dims()[0], a.dims()[1]] {
                        return Err(ExportError::Input {
                            path: src.run_dir.clone(),
                            message: format!(
                                "`{module}`: the adapter's shapes {:?} · {:?} do not fit the base weight {shape:?}",
                                b.dims(),
                                a.dims()
                            ),
                        });
                    }
                }
            }
            Trained::Full(trained) => {
                for n in trained.names() {
                    if !base.contains(n) {
                        return Err(ExportError::Input {
                            path: src.run_dir.clone(),
                            message: format!(
                                "the checkpoint has `{n}`, which the base model does not"
                            ),
                        });
                    }
                }
            }
        }
        Ok(Self { src, base, names })
    }

    /// Every tensor's Hugging Face name, in model order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// A tensor's shape.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>, ExportError> {
        Ok(self.base.shape(name)?)
    }

    /// Parameters of the whole model.
    pub fn parameter_count(&self) -> Result<u64, ExportError> {
        let mut n = 0u64;
        for name in &self.names {
            n += self.shape(name)?.iter().product::<usize>() as u64;
        }
        Ok(n)
    }

    /// Tensor `name` of the merged model, in f32 on the CPU.
    pub fn tensor(&self, name: &str) -> Result<Tensor, ExportError> {
        Ok(Tensor::from_vec(
            self.values(name)?,
            self.shape(name)?,
            &Device::Cpu,
        )?)
    }

    /// Tensor `name` of the merged model as f32 values, row-major. A tensor with a NaN or an
    /// infinity (a run that diverged) is refused: no format can make a working model of it.
    pub fn values(&self, name: &str) -> Result<Vec<f32>, ExportError> {
        let values = match &self.src.trained {
            Trained::Full(trained) if trained.contains(name) => trained.load_f32(name)?,
            Trained::Full(_) => self.base.load_f32(name)?,
            Trained::Lora(lora) => {
                let mut w = self.base.load_f32(name)?;
                let module = name.strip_suffix(".weight");
                if let Some((a, b)) = module.and_then(|m| lora.modules.get(m)) {
                    add_low_rank(&mut w, a, b, lora.spec.scale())?;
                }
                w
            }
        };
        // In blocks without early exit, so the test vectorises; the blocks in parallel.
        let finite = |c: &[f32]| c.iter().fold(true, |ok, v| ok & v.is_finite());
        if !values.par_chunks(1 << 16).all(finite) {
            return Err(ExportError::Input {
                path: self.src.run_dir.clone(),
                message: format!(
                    "tensor `{name}` of the trained model holds NaN or infinite values (the run diverged); export an earlier checkpoint with --checkpoint"
                ),
            });
        }
        Ok(values)
    }
}

/// `w += scale · B·A` for `w` [out, in], `b` [out, r], `a` [r, in], without a second [out, in]
/// buffer: each row gains `Σₖ scale·b[row, k] · a[k, ·]`, summed over a strip of columns in
/// registers before it is added, so `w` is read and written once.
fn add_low_rank(w: &mut [f32], a: &Tensor, b: &Tensor, scale: f64) -> Result<(), ExportError> {
    let (rank, cols) = a.dims2()?;
    if b.dims2()?.1 != rank || w.len() != b.dims2()?.0 * cols {
        return Err(ExportError::Invalid(format!(
            "LoRA shapes {:?} · {:?} do not fit a weight of {} values",
            b.dims(),
            a.dims(),
            w.len()
        )));
    }
    let a: Vec<f32> = a.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let b: Vec<f32> = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let rows_per_task = (1usize << 16).div_ceil(cols).max(1);
    w.par_chunks_mut(rows_per_task * cols)
        .zip(b.par_chunks(rows_per_task * rank))
        .for_each(|(w, b)| add_rows(w, &a, b, rank, scale as f32));
    Ok(())
}

/// Columns summed in registers at a time by [`add_rows`].
const STRIP: usize = 16;

/// [`add_low_rank`] on a run of whole rows of `w` and the same rows of `b`.
fn add_rows(w: &mut [f32], a: &[f32], b: &[f32], rank: usize, scale: f32) {
    let cols = a.len() / rank;
    let full = cols / STRIP * STRIP;
    let mut coeffs = vec![0f32; rank];
    for (row, b_row) in w.chunks_exact_mut(cols).zip(b.chunks_exact(rank)) {
        for (c, b) in coeffs.iter_mut().zip(b_row) {
            *c = b * scale;
        }
        let (strips, tail) = row.split_at_mut(full);
        for (s, xs) in strips.chunks_exact_mut(STRIP).enumerate() {
            let mut acc = [0f32; STRIP];
            for (c, a_row) in coeffs.iter().zip(a.chunks_exact(cols)) {
                let ys = &a_row[s * STRIP..(s + 1) * STRIP];
                for i in 0..STRIP {
                    acc[i] += c * ys[i];
                }
            }
            for i in 0..STRIP {
                xs[i] += acc[i];
            }
        }
        for (j, x) in tail.iter_mut().enumerate() {
            let col = full + j;
            *x += coeffs
                .iter()
                .zip(a.chunks_exact(cols))
                .map(|(c, a_row)| c * a_row[col])
                .sum::<f32>();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::order_key;

    #[test]
    fn tensors_sort_in_model_order() {
        let mut v = vec![
            "lm_head.weight",
            "model.layers.10.mlp.up_proj.weight",
            "model.norm.weight",
            "model.layers.2.self_attn.q_proj.weight",
            "model.embed_tokens.weight",
        ];
        v.sort_by_key(|n| order_key(n));
        assert_eq!(
            v,
            vec![
                "model.embed_tokens.weight",
                "model.layers.2.self_attn.q_proj.weight",
                "model.layers.10.mlp.up_proj.weight",
                "model.norm.weight",
                "lm_head.weight"
            ]
        );
    }
}
