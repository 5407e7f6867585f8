//! The decoder-only transformer every supported family is a variant of, written so it can be
//! trained: full logits for every position, differentiable ops only (see [`crate::ops`]); one decoder layer is `layer.rs`, frozen base
//! weights without gradients, LoRA on any projection, full fine-tuning, and optional gradient
//! checkpointing per decoder layer.
//!
//! Family differences are data in [`ModelConfig`]: fused projections (Phi-3), q/k norms
//! (Qwen3), biases (Qwen2, Llama options), Gemma 2's scaled embeddings, `1 + w` norms, extra
//! norms around attention and MLP, soft-capping and alternating sliding windows.

use crate::block::Chain;
use crate::config::ModelConfig;
use crate::kv_cache::KvCache;
use crate::layer::{Checkpointed, DecoderLayer, GateUp, PassCtx, Qkv};
use crate::linear::{Linear, LoraSpec, Param};
use crate::ops::SideGrads;
use crate::ops::{frozen_matmul, rms_norm, softcap, Precomputed};
use crate::rng::ModelRng;
use crate::rope::Rotary;
use crate::target::Target;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use std::sync::Arc;

/// A causal language model of one of the supported families.
#[derive(Debug)]
pub struct CausalLm {
    cfg: Arc<ModelConfig>,
    embed: Param,
    layers: Vec<Arc<DecoderLayer>>,
    norm: Param,
    /// `None` when the output projection is tied to the embedding.
    lm_head: Option<Linear>,
    rotary: Rotary,
    device: Device,
    dtype: DType,
    checkpointing: bool,
    side: SideGrads,
    /// Whether the fused CPU blocks run ([`crate::mlp`]); on by default.
    fused_blocks: bool,
}

/// Where the weights of a model come from: a function from a tensor name and the shape the
/// config implies to the tensor (`None` when absent).
pub(crate) type WeightSource<'a> =
    dyn FnMut(&str, &[usize]) -> std::result::Result<Option<Tensor>, crate::ModelError> + 'a;

impl CausalLm {
    /// Builds the model from named tensors (`get(name, shape)`), checking every shape.
    pub(crate) fn build(
        cfg: ModelConfig,
        get: &mut WeightSource<'_>,
        device: &Device,
        dtype: DType,
    ) -> std::result::Result<Self, crate::ModelError> {
        use crate::ModelError;
        let cfg = Arc::new(cfg);
        let (h, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let (qd, kvd) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
        let mut req = |name: &str, shape: &[usize]| -> std::result::Result<Tensor, ModelError> {
            get(name, shape)?.ok_or_else(|| ModelError::MissingTensor { name: name.into() })
        };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let p = format!("model.layers.{l}");
            let mut lin = |module: &str,
                           out: usize,
                           inp: usize,
                           bias: bool|
             -> std::result::Result<Linear, ModelError> {
                let name = format!("{p}.{module}");
                let w = req(&format!("{name}.weight"), &[out, inp])?;
                let b = if bias {
                    Some(req(&format!("{name}.bias"), &[out])?)
                } else {
                    None
                };
                Ok(Linear::new(name, w, b))
            };
            let qkv = if cfg.fused_projections {
                Qkv::Fused(lin("self_attn.qkv_proj", qd + 2 * kvd, h, cfg.qkv_bias)?)
            } else {
                Qkv::Separate {
                    q: lin("self_attn.q_proj", qd, h, cfg.qkv_bias)?,
                    k: lin("self_attn.k_proj", kvd, h, cfg.qkv_bias)?,
                    v: lin("self_attn.v_proj", kvd, h, cfg.qkv_bias)?,
                }
            };
            let o = lin("self_attn.o_proj", h, qd, cfg.o_bias)?;
            let gate_up = if cfg.fused_projections {
                GateUp::Fused(lin("mlp.gate_up_proj", 2 * i, h, cfg.mlp_bias)?)
            } else {
                GateUp::Separate {
                    gate: lin("mlp.gate_proj", i, h, cfg.mlp_bias)?,
                    up: lin("mlp.up_proj", i, h, cfg.mlp_bias)?,
                }
            };
            let down = lin("mlp.down_proj", h, i, cfg.mlp_bias)?;
            let mut norm = |n: &str, d: usize| -> std::result::Result<Param, ModelError> {
                Ok(Param::Frozen(req(&format!("{p}.{n}.weight"), &[d])?))
            };
            let (q_norm, k_norm) = if cfg.qk_norm {
                (
                    Some(norm("self_attn.q_norm", hd)?),
                    Some(norm("self_attn.k_norm", hd)?),
                )
            } else {
                (None, None)
            };
            let input_norm = norm("input_layernorm", h)?;
            let post_attn_norm = norm("post_attention_layernorm", h)?;
            let (pre_ff_norm, post_ff_norm) = if cfg.gemma_norms {
                (
                    Some(norm("pre_feedforward_layernorm", h)?),
                    Some(norm("post_feedforward_layernorm", h)?),
                )
            } else {
                (None, None)
            };
            layers.push(Arc::new(DecoderLayer {
                cfg: cfg.clone(),
                window: cfg.layer_windows[l],
                qkv,
                o,
                q_norm,
                k_norm,
                gate_up,
                down,
                input_norm,
                post_attn_norm,
                pre_ff_norm,
                post_ff_norm,
            }));
        }
        let embed = req("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let norm = req("model.norm.weight", &[h])?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(Linear::new(
                "lm_head".into(),
                req("lm_head.weight", &[cfg.vocab_size, h])?,
                None,
            ))
        };
        Ok(Self {
            rotary: Rotary::new(&cfg),
            cfg,
            embed: Param::Frozen(embed),
            layers,
            norm: Param::Frozen(norm),
            lm_head,
            device: device.clone(),
            dtype,
            checkpointing: false,
            side: Arc::default(),
            fused_blocks: true,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Recompute each decoder layer's activations in the backward pass instead of keeping them
    /// (less memory, about one more forward pass of time).
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }
    pub fn gradient_checkpointing(&self) -> bool {
        self.checkpointing
    }

    /// Whether the decoder layers may run their fused CPU blocks (the SwiGLU MLP as one op); on by
    /// default. Off, every layer runs as a composition of ops: for the tests, which compare the
    /// two, and for diagnosis.
    pub fn set_fused_blocks(&mut self, on: bool) {
        self.fused_blocks = on;
    }

    fn layer_mut(&mut self, i: usize) -> Result<&mut DecoderLayer> {
        Arc::get_mut(&mut self.layers[i])
            .ok_or_else(|| candle_core::Error::Msg("a layer is in use by a running pass".into()))
    }

    /// Every linear layer of the model (lm_head included when untied).
    pub fn linears(&self) -> Vec<&Linear> {
        let mut v: Vec<&Linear> = self.layers.iter().flat_map(|l| l.linears()).collect();
        v.extend(self.lm_head.as_ref());
        v
    }

    /// Adds fresh LoRA adapters (PEFT initialisation, seeded) to the decoder projections that
    /// `targets` select. Returns how many modules got one.
    pub fn add_lora(&mut self, targets: &[Target], spec: &LoraSpec, seed: u64) -> Result<usize> {
        let mut rng = crate::rng::seeded(seed);
        let mut n = 0;
        for i in 0..self.layers.len() {
            for lin in self.layer_mut(i)?.linears_mut() {
                if targets.iter().any(|t| t.selects(lin.module())) {
                    lin.add_lora(spec, &mut rng)?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Sets the adapter of the module named `module` (`model.layers.0.self_attn.q_proj`).
    pub fn set_lora(
        &mut self,
        module: &str,
        a: Tensor,
        b: Tensor,
        spec: &LoraSpec,
    ) -> Result<bool> {
        for i in 0..self.layers.len() {
            for lin in self.layer_mut(i)?.linears_mut() {
                if lin.name == module {
                    let (out, inp) = lin.weight.value().dims2()?;
                    if a.dims() != [spec.rank, inp] || b.dims() != [out, spec.rank] {
                        candle_core::bail!(
                            "{module}: adapter shapes {:?} and {:?} do not fit a [{out}, {inp}] weight with rank {}",
                            a.dims(),
                            b.dims(),
                            spec.rank
                        );
                    }
                    lin.set_lora(a, b, spec)?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Makes every weight trainable (full fine-tuning).
    pub fn make_all_trainable(&mut self) -> Result<()> {
        let dtype = self.dtype;
        self.embed.make_trainable(dtype)?;
        self.norm.make_trainable(dtype)?;
        if let Some(h) = &mut self.lm_head {
            h.weight.make_trainable(dtype)?;
        }
        for i in 0..self.layers.len() {
            for p in self.layer_mut(i)?.params_mut() {
                p.make_trainable(dtype)?;
            }
        }
        Ok(())
    }

    /// Folds every adapter into its base weight.
    pub fn merge_lora(&mut self) -> Result<()> {
        for i in 0..self.layers.len() {
            for lin in self.layer_mut(i)?.linears_mut() {
                lin.merge()?;
            }
        }
        Ok(())
    }

    /// Takes every adapter back out of its base weight.
    pub fn unmerge_lora(&mut self) -> Result<()> {
        for i in 0..self.layers.len() {
            for lin in self.layer_mut(i)?.linears_mut() {
                lin.unmerge()?;
            }
        }
        Ok(())
    }

    /// The trainable variables with their names: PEFT's names for LoRA matrices
    /// (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`), the Hugging Face
    /// names for fully trained weights (`model.layers.0.mlp.up_proj.weight`).
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        let mut push = |name: String, p: &Param| {
            if let Some(v) = p.var() {
                out.push((name, v.clone()))
            }
        };
        push("model.embed_tokens.weight".into(), &self.embed);
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, p) in layer.named_params(&format!("model.layers.{i}")) {
                push(name, p);
            }
        }
        push("model.norm.weight".into(), &self.norm);
        if let Some(h) = &self.lm_head {
            push("lm_head.weight".into(), &h.weight);
        }
        for lin in self.linears() {
            if let Some(l) = &lin.lora {
                out.push((
                    format!("base_model.model.{}.lora_A.weight", lin.name),
                    l.a.clone(),
                ));
                out.push((
                    format!("base_model.model.{}.lora_B.weight", lin.name),
                    l.b.clone(),
                ));
            }
        }
        out
    }

    /// All weights as they would be saved (adapters merged in if they are merged), by their
    /// Hugging Face names.
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed.value())];
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, p) in layer.named_params(&format!("model.layers.{i}")) {
                out.push((name, p.value()));
            }
        }
        out.push(("model.norm.weight".into(), self.norm.value()));
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".into(), h.weight.value()));
        }
        out
    }

    fn masks(&self, t: usize, start: usize) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let s = start + t;
        let make = |window: Option<usize>| -> Result<Option<Tensor>> {
            let mut any = false;
            let mut m = vec![0f32; t * s];
            for qi in 0..t {
                let q = start + qi;
                for k in 0..s {
                    let blocked = k > q || window.is_some_and(|w| q - k >= w);
                    if blocked {
                        m[qi * s + k] = f32::NEG_INFINITY;
                        any = true;
                    }
                }
            }
            if !any {
                return Ok(None);
            }
            Ok(Some(
                Tensor::from_vec(m, (t, s), &self.device)?.to_dtype(self.dtype)?,
            ))
        };
        let full = make(None)?;
        let window = self.cfg.layer_windows.iter().flatten().next().copied();
        let sliding = match window {
            Some(w) => make(Some(w))?,
            None => None,
        };
        Ok((full, sliding))
    }

    fn embed(&self, ids: &Tensor, grad: bool) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let emb = self.embed.get(grad);
        let x = emb
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.hidden_size))?;
        // A bf16 embedding under f32 activations (bf16 training on the CPU).
        let x = if x.dtype() == self.dtype {
            x
        } else {
            x.to_dtype(self.dtype)?
        };
        if self.cfg.gemma_norms {
            // Gemma: × √hidden, the factor rounded to the activation dtype as transformers does.
            let normalizer = Tensor::new(&[(self.cfg.hidden_size as f32).sqrt()], &self.device)?
                .to_dtype(self.dtype)?;
            x.broadcast_mul(&normalizer)
        } else {
            Ok(x)
        }
    }

    fn head(&self, h: &Tensor, grad: bool) -> Result<Tensor> {
        let logits = match &self.lm_head {
            Some(head) => head.forward(h, grad, None)?,
            None => match &self.embed {
                Param::Frozen(w) => frozen_matmul(h, w)?,
                p => h.broadcast_matmul(&p.get(grad).t()?)?,
            },
        };
        match self.cfg.final_logit_softcapping {
            Some(cap) => softcap(&logits, cap),
            None => Ok(logits),
        }
    }

    fn run(
        &self,
        ids: &Tensor,
        mut cache: Option<&mut KvCache>,
        grad: bool,
        mut rng: Option<&mut ModelRng>,
        last_only: bool,
    ) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        if t == 0 {
            candle_core::bail!("empty input");
        }
        let start = cache.as_ref().map_or(0, |c| c.len);
        let (cos, sin) = self.rotary.cos_sin(start, t, &self.device, self.dtype)?;
        let (full_mask, window_mask) = self.masks(t, start)?;
        let checkpoint = self.checkpointing && grad && cache.is_none();
        let ctx = PassCtx {
            cos,
            sin,
            full_mask,
            window_mask,
            side: self.side.clone(),
            fused: self.fused_blocks,
            // Checkpointed layers enter the graph one by one; a KV cache takes composed layers.
            chain: (grad && !checkpoint && cache.is_none() && self.fused_blocks)
                .then(|| Chain::new(self.side.clone())),
            columns: Default::default(),
        };
        let mut x = self.embed(ids, grad)?;
        if checkpoint && !x.track_op() {
            // A checkpointed layer's backward runs only if its input is part of the graph; with
            // a frozen embedding it is not, so make the embedding output a (leaf) variable.
            x = Var::from_tensor(&x)?.into_inner();
        }
        for (i, layer) in self.layers.iter().enumerate() {
            x = if checkpoint {
                let saved_rng = rng.as_deref().cloned();
                let out = layer
                    .forward(&x.detach(), &ctx, None, false, rng.as_deref_mut())?
                    .contiguous()?;
                x.apply_op1(Checkpointed {
                    layer: layer.clone(),
                    ctx: ctx.clone(),
                    rng: saved_rng,
                    out: Precomputed::new(out),
                    side: self.side.clone(),
                })?
            } else {
                let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
                layer.forward(&x, &ctx, slot, grad, rng.as_deref_mut())?
            };
        }
        if let Some(c) = cache {
            c.len += t;
        }
        let x = ctx.flush(&x)?;
        let x = if last_only { x.narrow(1, t - 1, 1)? } else { x };
        let h = rms_norm(
            &x,
            &self.norm.get(grad),
            self.cfg.rms_norm_eps,
            self.cfg.gemma_norms,
        )?;
        self.head(&h, grad)
    }

    /// Logits [B, T, vocab] for every position, with the graph for the backward pass (no
    /// dropout). Gradient checkpointing applies if it is on.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.run(ids, None, true, None, false)
    }

    /// Like [`forward`](Self::forward), with LoRA dropout drawn from `rng` (training).
    pub fn forward_train(&self, ids: &Tensor, rng: &mut ModelRng) -> Result<Tensor> {
        self.run(ids, None, true, Some(rng), false)
    }

    /// Logits [B, T, vocab] without recording a graph (evaluation).
    pub fn forward_eval(&self, ids: &Tensor) -> Result<Tensor> {
        self.run(ids, None, false, None, false)
    }

    /// Logits [B, 1, vocab] of the last position, extending `cache` by the input (generation).
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.run(ids, Some(cache), false, None, true)
    }

    /// A KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// `loss.backward()`, plus the gradients that are not any op's input: those checkpointed
    /// layers computed while recomputing, and the adapters of the fused MLP. Training must call
    /// this, not `loss.backward()` itself, or those gradients are missing.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        let mut grads = loss.backward()?;
        let side = std::mem::take(
            &mut *self
                .side
                .lock()
                .map_err(|_| candle_core::Error::Msg("checkpoint lock poisoned".into()))?,
        );
        for (var, g) in side {
            let sum = match grads.remove(&var) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            grads.insert(&var, sum);
        }
        Ok(grads)
    }
}
