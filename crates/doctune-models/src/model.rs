//! The decoder-only transformer every supported family is a variant of, written so it can be
//! trained: full logits for every position, differentiable ops only (see `ops.rs`), frozen base
//! weights without gradients, LoRA on any projection, full fine-tuning, and optional gradient
//! checkpointing per decoder layer.
//!
//! Family differences are data in [`ModelConfig`]: fused projections (Phi-3), q/k norms
//! (Qwen3), biases (Qwen2, Llama options), Gemma 2's scaled embeddings, `1 + w` norms, extra
//! norms around attention and MLP, soft-capping and alternating sliding windows.

use crate::attention::attention;
use crate::config::{Activation, ModelConfig};
use crate::kv_cache::KvCache;
use crate::linear::{Linear, LoraSpec, Param};
use crate::ops::{frozen_matmul, rms_norm, softcap, swiglu, Precomputed};
use crate::rng::ModelRng;
use crate::rope::rope;
use crate::rope::Rotary;
use crate::target::Target;
use candle_core::backprop::GradStore;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, MetalStorage, Result, Shape, Tensor,
    Var, D,
};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
enum Qkv {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

#[derive(Debug, Clone)]
enum GateUp {
    Separate { gate: Linear, up: Linear },
    Fused(Linear),
}

/// One decoder layer.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    cfg: Arc<ModelConfig>,
    window: Option<usize>,
    qkv: Qkv,
    o: Linear,
    q_norm: Option<Param>,
    k_norm: Option<Param>,
    gate_up: GateUp,
    down: Linear,
    /// Llama-style: before attention. Gemma 2: the same.
    input_norm: Param,
    /// Llama-style: before the MLP. Gemma 2: after attention.
    post_attn_norm: Param,
    /// Gemma 2 only: before and after the MLP.
    pre_ff_norm: Option<Param>,
    post_ff_norm: Option<Param>,
}

fn linears_of<'a>(
    qkv: &'a mut Qkv,
    o: &'a mut Linear,
    gate_up: &'a mut GateUp,
    down: &'a mut Linear,
) -> Vec<&'a mut Linear> {
    let mut v: Vec<&mut Linear> = match qkv {
        Qkv::Separate { q, k, v } => vec![q, k, v],
        Qkv::Fused(l) => vec![l],
    };
    v.push(o);
    match gate_up {
        GateUp::Separate { gate, up } => {
            v.push(gate);
            v.push(up)
        }
        GateUp::Fused(l) => v.push(l),
    }
    v.push(down);
    v
}

/// Per-pass inputs shared by the layers.
#[derive(Debug, Clone)]
struct PassCtx {
    cos: Tensor,
    sin: Tensor,
    /// Additive masks [T, S] for full attention and for sliding layers (`None`: nothing masked).
    full_mask: Option<Tensor>,
    window_mask: Option<Tensor>,
}

impl DecoderLayer {
    fn norm(&self, x: &Tensor, w: &Param, grad: bool) -> Result<Tensor> {
        rms_norm(x, &w.get(grad), self.cfg.rms_norm_eps, self.cfg.gemma_norms)
    }

    fn linears(&self) -> Vec<&Linear> {
        let mut v = match &self.qkv {
            Qkv::Separate { q, k, v } => vec![q, k, v],
            Qkv::Fused(l) => vec![l],
        };
        v.push(&self.o);
        match &self.gate_up {
            GateUp::Separate { gate, up } => v.extend([gate, up]),
            GateUp::Fused(l) => v.push(l),
        }
        v.push(&self.down);
        v
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        linears_of(
            &mut self.qkv,
            &mut self.o,
            &mut self.gate_up,
            &mut self.down,
        )
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let DecoderLayer {
            qkv,
            o,
            gate_up,
            down,
            input_norm,
            post_attn_norm,
            q_norm,
            k_norm,
            pre_ff_norm,
            post_ff_norm,
            ..
        } = self;
        let mut v: Vec<&mut Param> = vec![input_norm, post_attn_norm];
        v.extend(
            [q_norm, k_norm, pre_ff_norm, post_ff_norm]
                .into_iter()
                .flatten(),
        );
        for l in linears_of(qkv, o, gate_up, down) {
            v.push(&mut l.weight);
            if let Some(b) = &mut l.bias {
                v.push(b);
            }
        }
        v
    }

    /// Every parameter of this layer with its Hugging Face name (`{prefix}.input_layernorm.weight`,
    /// `{prefix}.self_attn.q_proj.weight`, …), LoRA matrices excluded.
    fn named_params(&self, prefix: &str) -> Vec<(String, &Param)> {
        let mut out = vec![
            (format!("{prefix}.input_layernorm.weight"), &self.input_norm),
            (
                format!("{prefix}.post_attention_layernorm.weight"),
                &self.post_attn_norm,
            ),
        ];
        let optional = [
            ("self_attn.q_norm", &self.q_norm),
            ("self_attn.k_norm", &self.k_norm),
            ("pre_feedforward_layernorm", &self.pre_ff_norm),
            ("post_feedforward_layernorm", &self.post_ff_norm),
        ];
        for (name, p) in optional {
            if let Some(p) = p {
                out.push((format!("{prefix}.{name}.weight"), p));
            }
        }
        for l in self.linears() {
            out.push((format!("{}.weight", l.name), &l.weight));
            if let Some(b) = &l.bias {
                out.push((format!("{}.bias", l.name), b));
            }
        }
        out
    }

    /// Every variable of this layer (trainable weights and LoRA matrices).
    fn vars(&self) -> Vec<Var> {
        let mut out: Vec<Var> = self
            .named_params("")
            .into_iter()
            .filter_map(|(_, p)| p.var().cloned())
            .collect();
        for l in self.linears() {
            if let Some(lora) = &l.lora {
                out.push(lora.a.clone());
                out.push(lora.b.clone());
            }
        }
        out
    }

    fn attention(
        &self,
        x: &Tensor,
        ctx: &PassCtx,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        grad: bool,
        mut rng: Option<&mut ModelRng>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, t, _) = x.dims3()?;
        let (hd, nh, nkv) = (c.head_dim, c.num_heads, c.num_kv_heads);
        let (q, k, v) = match &self.qkv {
            Qkv::Separate { q, k, v } => (
                q.forward(x, grad, rng.as_deref_mut())?,
                k.forward(x, grad, rng.as_deref_mut())?,
                v.forward(x, grad, rng.as_deref_mut())?,
            ),
            Qkv::Fused(l) => {
                let qkv = l.forward(x, grad, rng.as_deref_mut())?;
                (
                    qkv.narrow(D::Minus1, 0, nh * hd)?,
                    qkv.narrow(D::Minus1, nh * hd, nkv * hd)?,
                    qkv.narrow(D::Minus1, (nh + nkv) * hd, nkv * hd)?,
                )
            }
        };
        // [B, T, heads, head_dim], the projections' own layout: no transposes (Phi-3's fused
        // projection is narrowed, hence strided, and is copied once).
        let mut q = q.reshape((b, t, nh, hd))?.contiguous()?;
        let mut k = k.reshape((b, t, nkv, hd))?.contiguous()?;
        let v = v.reshape((b, t, nkv, hd))?.contiguous()?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = rms_norm(&q, &qn.get(grad), c.rms_norm_eps, false)?;
            k = rms_norm(&k, &kn.get(grad), c.rms_norm_eps, false)?;
        }
        let q = rope(&q, &ctx.cos, &ctx.sin)?;
        let k = rope(&k, &ctx.cos, &ctx.sin)?;
        let (k, v) = match cache {
            Some(slot) => {
                let (k, v) = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
                    None => (k, v),
                };
                *slot = Some((k.detach(), v.detach()));
                (k, v)
            }
            None => (k, v),
        };
        let mask = if self.window.is_some() {
            ctx.window_mask.as_ref()
        } else {
            ctx.full_mask.as_ref()
        };
        let out = attention(&q, &k, &v, mask, c.attn_scale, c.attn_logit_softcapping)?
            .reshape((b, t, nh * hd))?;
        self.o.forward(&out, grad, rng)
    }

    fn mlp(&self, x: &Tensor, grad: bool, mut rng: Option<&mut ModelRng>) -> Result<Tensor> {
        let (gate, up) = match &self.gate_up {
            GateUp::Separate { gate, up } => (
                gate.forward(x, grad, rng.as_deref_mut())?,
                up.forward(x, grad, rng.as_deref_mut())?,
            ),
            GateUp::Fused(l) => {
                let gu = l.forward(x, grad, rng.as_deref_mut())?;
                let i = gu.dim(D::Minus1)? / 2;
                (gu.narrow(D::Minus1, 0, i)?, gu.narrow(D::Minus1, i, i)?)
            }
        };
        let h = match self.cfg.activation {
            Activation::Silu => swiglu(&gate, &up)?,
            Activation::GeluTanh => (gate.gelu()? * up)?,
            Activation::Gelu => (gate.gelu_erf()? * up)?,
        };
        self.down.forward(&h, grad, rng)
    }

    fn forward(
        &self,
        x: &Tensor,
        ctx: &PassCtx,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        grad: bool,
        mut rng: Option<&mut ModelRng>,
    ) -> Result<Tensor> {
        let h = self.norm(x, &self.input_norm, grad)?;
        let a = self.attention(&h, ctx, cache, grad, rng.as_deref_mut())?;
        if let (Some(pre), Some(post)) = (&self.pre_ff_norm, &self.post_ff_norm) {
            let x = (x + self.norm(&a, &self.post_attn_norm, grad)?)?;
            let m = self.mlp(&self.norm(&x, pre, grad)?, grad, rng)?;
            x + self.norm(&m, post, grad)?
        } else {
            let x = (x + a)?;
            let m = self.mlp(&self.norm(&x, &self.post_attn_norm, grad)?, grad, rng)?;
            x + m
        }
    }
}

/// Gradients that gradient-checkpointed layers computed during recomputation, to be added to
/// the outer backward pass's store.
type SideGrads = Arc<Mutex<Vec<(Var, Tensor)>>>;

/// A decoder layer run without recording its graph; the backward pass runs it again, with the
/// graph, from the saved input.
struct Checkpointed {
    layer: Arc<DecoderLayer>,
    ctx: PassCtx,
    /// The dropout generator as it was before the layer ran, so the recomputation draws the same
    /// masks.
    rng: Option<ModelRng>,
    out: Precomputed,
    side: SideGrads,
}

impl CustomOp1 for Checkpointed {
    fn name(&self) -> &'static str {
        "checkpointed-layer"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.out.cpu()
    }
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        self.out.cuda()
    }
    fn metal_fwd(&self, _: &MetalStorage, _: &Layout) -> Result<(MetalStorage, Shape)> {
        self.out.metal()
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let x = Var::from_tensor(&arg.detach())?;
        let mut rng = self.rng.clone();
        let y = self
            .layer
            .forward(x.as_tensor(), &self.ctx, None, true, rng.as_mut())?;
        let grads = (y * grad_res.detach())?.sum_all()?.backward()?;
        let mut side = self
            .side
            .lock()
            .map_err(|_| candle_core::Error::Msg("checkpoint lock poisoned".into()))?;
        for var in self.layer.vars() {
            if let Some(g) = grads.get(&var) {
                side.push((var, g.clone()));
            }
        }
        Ok(grads.get(&x).cloned())
    }
}

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
        self.embed.make_trainable()?;
        self.norm.make_trainable()?;
        if let Some(h) = &mut self.lm_head {
            h.weight.make_trainable()?;
        }
        for i in 0..self.layers.len() {
            for p in self.layer_mut(i)?.params_mut() {
                p.make_trainable()?;
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
        let ctx = PassCtx {
            cos,
            sin,
            full_mask,
            window_mask,
        };
        let mut x = self.embed(ids, grad)?;
        let checkpoint = self.checkpointing && grad && cache.is_none();
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

    /// `loss.backward()`, plus the gradients checkpointed layers computed while recomputing.
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
