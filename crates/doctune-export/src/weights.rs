//! The merged model's weights, one tensor at a time: the base model's tensor (memory-mapped),
//! with the LoRA update `scale · B·A` added to the weights it adapted — or, for a full
//! fine-tuning run, the checkpoint's trained tensor in its place. Nothing holds more than one
//! tensor, so an export's memory is bounded by the largest tensor, not the model.

use crate::source::{Source, Trained};
use crate::ExportError;
use candle_core::{DType, Device, Tensor};
use doctune_models::WeightReader;

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
        match &self.src.trained {
            Trained::Full(trained) if trained.contains(name) => {
                Ok(trained.load(name, &Device::Cpu)?.to_dtype(DType::F32)?)
            }
            Trained::Full(_) => Ok(self.base.load(name, &Device::Cpu)?.to_dtype(DType::F32)?),
            Trained::Lora(lora) => {
                let w = self.base.load(name, &Device::Cpu)?.to_dtype(DType::F32)?;
                let module = name.strip_suffix(".weight");
                match module.and_then(|m| lora.modules.get(m)) {
                    Some((a, b)) => {
                        let delta = (b.matmul(a)? * lora.spec.scale())?;
                        Ok((w + delta)?)
                    }
                    None => Ok(w),
                }
            }
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
