//! One decoder layer of the transformer ([`DecoderLayer`]): attention (q/k/v, fused for Phi-3;
//! Qwen3's q/k norms; RoPE; grouped-query attention with a KV cache), the MLP (SwiGLU or GELU,
//! fused gate/up for Phi-3) and the norms around them (Gemma 2's four), and the op that runs a
//! layer without keeping its graph and recomputes it in the backward pass ([`Checkpointed`],
//! gradient checkpointing).

use crate::attention::{attention, Columns};
use crate::block::{Chain, Graph, PreNorm};
use crate::config::{Activation, ModelConfig};
use crate::linear::{Linear, Param};
use crate::ops::{rms_norm, swiglu, Precomputed, SideGrads};
use crate::rng::ModelRng;
use crate::rope::rope;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, DType, Layout, MetalStorage, Result, Shape, Tensor, Var, D,
};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub(crate) enum Qkv {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

#[derive(Debug, Clone)]
pub(crate) enum GateUp {
    Separate { gate: Linear, up: Linear },
    Fused(Linear),
}

/// One decoder layer.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub(crate) cfg: Arc<ModelConfig>,
    pub(crate) window: Option<usize>,
    pub(crate) qkv: Qkv,
    pub(crate) o: Linear,
    pub(crate) q_norm: Option<Param>,
    pub(crate) k_norm: Option<Param>,
    pub(crate) gate_up: GateUp,
    pub(crate) down: Linear,
    /// Llama-style: before attention. Gemma 2: the same.
    pub(crate) input_norm: Param,
    /// Llama-style: before the MLP. Gemma 2: after attention.
    pub(crate) post_attn_norm: Param,
    /// Gemma 2 only: before and after the MLP.
    pub(crate) pre_ff_norm: Option<Param>,
    pub(crate) post_ff_norm: Option<Param>,
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
pub(crate) struct PassCtx {
    pub(crate) cos: Tensor,
    pub(crate) sin: Tensor,
    /// Additive masks [T, S] for full attention and for sliding layers (`None`: nothing masked).
    pub(crate) full_mask: Option<Tensor>,
    pub(crate) window_mask: Option<Tensor>,
    /// Where fused blocks put their adapters' gradients ([`SideGrads`]).
    pub(crate) side: SideGrads,
    /// Whether the fused CPU blocks may run ([`crate::mlp`]); off, every layer is composed.
    pub(crate) fused: bool,
    /// In a training pass of fused blocks (no checkpointing, no cache), the chain the
    /// Llama-style blocks join ([`Chain`]).
    pub(crate) chain: Option<Chain>,
    /// The masks' key columns per block of queries, shared by the layers' fused attention.
    pub(crate) columns: Arc<Columns>,
}

impl PassCtx {
    fn graph(&self) -> Graph<'_> {
        Graph {
            side: &self.side,
            chain: self.chain.as_ref(),
        }
    }

    /// `x` in the graph, for what reads it besides a fused block ([`Chain::flush`]).
    pub(crate) fn flush(&self, x: &Tensor) -> Result<Tensor> {
        match &self.chain {
            Some(c) => c.flush(x),
            None => Ok(x.clone()),
        }
    }
}

impl DecoderLayer {
    fn norm(&self, x: &Tensor, w: &Param, grad: bool) -> Result<Tensor> {
        rms_norm(x, &w.get(grad), self.cfg.rms_norm_eps, self.cfg.gemma_norms)
    }

    pub(crate) fn linears(&self) -> Vec<&Linear> {
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

    pub(crate) fn linears_mut(&mut self) -> Vec<&mut Linear> {
        linears_of(
            &mut self.qkv,
            &mut self.o,
            &mut self.gate_up,
            &mut self.down,
        )
    }

    pub(crate) fn params_mut(&mut self) -> Vec<&mut Param> {
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
    pub(crate) fn named_params(&self, prefix: &str) -> Vec<(String, &Param)> {
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
    pub(crate) fn vars(&self) -> Vec<Var> {
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

    /// The self-attention as one op ([`crate::self_attn`]) where it applies (a CPU pass
    /// without a KV cache); under `norm`, `x` is the residual stream and the op returns
    /// `x + attention(norm(x))`.
    fn fused_attention(
        &self,
        x: &Tensor,
        norm: Option<PreNorm>,
        ctx: &PassCtx,
        grad: bool,
        rng: Option<&mut ModelRng>,
    ) -> Result<Option<Tensor>> {
        let c = &self.cfg;
        let (true, Qkv::Separate { q, k, v }) = (ctx.fused && c.fused_attention(), &self.qkv)
        else {
            return Ok(None);
        };
        let parts = crate::self_attn::Parts {
            q,
            k,
            v,
            o: &self.o,
        };
        let attn = crate::self_attn::Attn {
            heads: (c.num_heads, c.num_kv_heads),
            head_dim: c.head_dim,
            cos: &ctx.cos,
            sin: &ctx.sin,
            mask: self.mask(ctx),
            columns: &ctx.columns,
            scale: c.attn_scale,
            cap: c.attn_logit_softcapping,
        };
        crate::self_attn::self_attention(x, norm, parts, &attn, grad, rng, ctx.graph())
    }

    /// The additive mask of this layer's attention (sliding or full).
    fn mask<'c>(&self, ctx: &'c PassCtx) -> Option<&'c Tensor> {
        if self.window.is_some() {
            ctx.window_mask.as_ref()
        } else {
            ctx.full_mask.as_ref()
        }
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
        let mask = self.mask(ctx);
        if cache.is_none() {
            if let Some(y) = self.fused_attention(x, None, ctx, grad, rng.as_deref_mut())? {
                return Ok(y);
            }
        }
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
        // Frozen bf16 weights with f32 activations (bf16 training on the CPU): the attention's
        // products in bf16 too, as autocast computes them.
        let bf16 = self.o.weight.value().dtype() == DType::BF16;
        let out = attention(
            &q,
            &k,
            &v,
            mask,
            c.attn_scale,
            c.attn_logit_softcapping,
            bf16,
        )?
        .reshape((b, t, nh * hd))?;
        self.o.forward(&out, grad, rng)
    }

    /// The SwiGLU MLP as one op ([`crate::mlp`]) where it applies; under `norm`, `x` is the
    /// residual stream and the op returns `x + mlp(norm(x))`.
    fn fused_mlp(
        &self,
        x: &Tensor,
        norm: Option<PreNorm>,
        ctx: &PassCtx,
        grad: bool,
        rng: Option<&mut ModelRng>,
    ) -> Result<Option<Tensor>> {
        let (true, GateUp::Separate { gate, up }) =
            (ctx.fused && self.cfg.fused_mlp(), &self.gate_up)
        else {
            return Ok(None);
        };
        let parts = crate::mlp::Mlp {
            gate,
            up,
            down: &self.down,
        };
        crate::mlp::mlp(x, norm, parts, grad, rng, ctx.graph())
    }

    fn mlp(
        &self,
        x: &Tensor,
        ctx: &PassCtx,
        grad: bool,
        mut rng: Option<&mut ModelRng>,
    ) -> Result<Tensor> {
        if let Some(y) = self.fused_mlp(x, None, ctx, grad, rng.as_deref_mut())? {
            return Ok(y);
        }
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

    pub(crate) fn forward(
        &self,
        x: &Tensor,
        ctx: &PassCtx,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        grad: bool,
        mut rng: Option<&mut ModelRng>,
    ) -> Result<Tensor> {
        if cache.is_none() && self.pre_ff_norm.is_none() && !self.cfg.gemma_norms {
            // Llama-style: each fused block takes its (frozen) norm and residual sum in; where
            // a block or its norm does not allow it, that half runs as below.
            let eps = self.cfg.rms_norm_eps;
            let fused = match PreNorm::of(&self.input_norm, eps)? {
                Some(n) => self.fused_attention(x, Some(n), ctx, grad, rng.as_deref_mut())?,
                None => None,
            };
            let x = match fused {
                Some(x) => x,
                None => {
                    let x = ctx.flush(x)?;
                    let h = self.norm(&x, &self.input_norm, grad)?;
                    (&x + self.attention(&h, ctx, None, grad, rng.as_deref_mut())?)?
                }
            };
            let fused = match PreNorm::of(&self.post_attn_norm, eps)? {
                Some(n) => self.fused_mlp(&x, Some(n), ctx, grad, rng.as_deref_mut())?,
                None => None,
            };
            return match fused {
                Some(x) => Ok(x),
                None => {
                    let x = ctx.flush(&x)?;
                    let m =
                        self.mlp(&self.norm(&x, &self.post_attn_norm, grad)?, ctx, grad, rng)?;
                    x + m
                }
            };
        }
        let x = &ctx.flush(x)?;
        let h = self.norm(x, &self.input_norm, grad)?;
        let a = self.attention(&h, ctx, cache, grad, rng.as_deref_mut())?;
        if let (Some(pre), Some(post)) = (&self.pre_ff_norm, &self.post_ff_norm) {
            let x = (x + self.norm(&a, &self.post_attn_norm, grad)?)?;
            let m = self.mlp(&self.norm(&x, pre, grad)?, ctx, grad, rng)?;
            x + self.norm(&m, post, grad)?
        } else {
            let x = (x + a)?;
            let m = self.mlp(&self.norm(&x, &self.post_attn_norm, grad)?, ctx, grad, rng)?;
            x + m
        }
    }
}

/// A decoder layer run without recording its graph; the backward pass runs it again, with the
/// graph, from the saved input.
pub(crate) struct Checkpointed {
    pub(crate) layer: Arc<DecoderLayer>,
    pub(crate) ctx: PassCtx,
    /// The dropout generator as it was before the layer ran, so the recomputation draws the same
    /// masks.
    pub(crate) rng: Option<ModelRng>,
    pub(crate) out: Precomputed,
    pub(crate) side: SideGrads,
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
