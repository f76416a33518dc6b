//! Mechanics every decoder shares: attention over `fast::scaled_dot_product_attention` with the
//! cache's mask, the gated MLP, and the mask choice when no cache is passed.

use crate::cache::{causal_mask, AttentionMask, KvCache};
use crate::config::ModelConfig;
use crate::error::{LmError, Result};
use rmlx::{fast, ops, Array};
use rmlx_nn::{Linear, Parallel, RmsNorm, Rope, Weights};

/// The nonlinearity of a gated MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `silu(gate) * up` (Llama, Qwen).
    Silu,
    /// `gelu_approx(gate) * up` (Gemma).
    GeluApprox,
}

/// Multi-head attention with grouped KV heads, optional q/k RMS norms (Qwen3, Gemma 3).
#[derive(Clone, Debug)]
pub struct Attention {
    /// q, k and v projections (fused into one on a GPU).
    pub qkv: Parallel,
    pub o_proj: Linear,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub rope: Rope,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// How to build one attention layer from a config.
pub struct AttentionSpec {
    /// Bias on q/k/v (Qwen2), o_proj follows `o_bias`.
    pub qkv_bias: bool,
    pub o_bias: bool,
    /// `q_norm`/`k_norm` present; `plus_one` = Gemma's `(1 + w)` form.
    pub qk_norm: bool,
    pub plus_one: bool,
    pub rope: Rope,
    pub scale: f32,
}

impl Attention {
    /// Takes `{prefix}.{q,k,v,o}_proj` (and norms) from `w`.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        c: &ModelConfig,
        spec: AttentionSpec,
    ) -> Result<Attention> {
        let (h, kv, d, dim) = (
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
            c.hidden_size,
        );
        let norm = |w: &mut Weights, name: &str| -> Result<Option<RmsNorm>> {
            if !spec.qk_norm {
                return Ok(None);
            }
            let p = format!("{prefix}.{name}");
            Ok(Some(if spec.plus_one {
                w.rms_norm_plus_one(&p, d, c.rms_norm_eps)?
            } else {
                w.rms_norm(&p, d, c.rms_norm_eps)?
            }))
        };
        let qkv = vec![
            w.linear(&format!("{prefix}.q_proj"), dim, h * d, spec.qkv_bias)?,
            w.linear(&format!("{prefix}.k_proj"), dim, kv * d, spec.qkv_bias)?,
            w.linear(&format!("{prefix}.v_proj"), dim, kv * d, spec.qkv_bias)?,
        ];
        Ok(Attention {
            qkv: Parallel::new(qkv, Parallel::fuse_by_default())?,
            o_proj: w.linear(&format!("{prefix}.o_proj"), h * d, dim, spec.o_bias)?,
            q_norm: norm(w, "q_norm")?,
            k_norm: norm(w, "k_norm")?,
            rope: spec.rope,
            n_heads: h,
            n_kv_heads: kv,
            head_dim: d,
            scale: spec.scale,
        })
    }

    /// `x: [B, L, dim]` → `[B, L, dim]`; the cache (if any) receives this step's keys/values.
    pub fn forward(
        &self,
        x: &Array,
        mask: &AttentionMask,
        cache: Option<&mut KvCache>,
    ) -> Result<Array> {
        let (q, k, v) = self.project(x)?;
        let o = self.attend(&q, &k, &v, mask, cache)?;
        self.output(&o)
    }

    /// A ragged decode step: row `b` of `x: [B, 1, dim]` is the next token of sequence `b`,
    /// which has its own cache `caches[b]` (any length) and mask `masks[b]`. The projections
    /// see all B rows at once (one matmul per weight); RoPE, the cache write and attention
    /// run per sequence, exactly as a batch of one would run them.
    pub fn forward_rows(
        &self,
        x: &Array,
        masks: &[AttentionMask],
        caches: &mut [&mut KvCache],
    ) -> Result<Array> {
        let b = x.shape()[0];
        if x.ndim() != 3 || x.shape()[1] != 1 || masks.len() != b || caches.len() != b {
            return Err(LmError::Generate(format!(
                "[forward_rows] x must be [B, 1, dim] with one mask and one cache per row, got {:?}, {} masks, {} caches",
                x.shape(),
                masks.len(),
                caches.len()
            )));
        }
        let (q, k, v) = self.project(x)?;
        let row = |a: &Array, i: usize| -> Result<Array> {
            Ok(ops::slice(
                a,
                &[i as i64, 0, 0, 0],
                &[i as i64 + 1, i64::MAX, i64::MAX, i64::MAX],
                &[1, 1, 1, 1],
            )?)
        };
        let mut outs = Vec::with_capacity(b);
        for (i, (mask, cache)) in masks.iter().zip(caches.iter_mut()).enumerate() {
            let o = self.attend(
                &row(&q, i)?,
                &row(&k, i)?,
                &row(&v, i)?,
                mask,
                Some(&mut **cache),
            )?;
            outs.push(o);
        }
        let o = if b == 1 {
            outs.pop().expect("one row")
        } else {
            ops::concatenate(&outs, 0)?
        };
        self.output(&o)
    }

    /// `x: [B, L, dim]` → q `[B, H, L, D]`, k and v `[B, Hkv, L, D]` (norms applied, no RoPE).
    fn project(&self, x: &Array) -> Result<(Array, Array, Array)> {
        let (b, l) = (x.shape()[0] as i64, x.shape()[1] as i64);
        // [B, L, H*D] → [B, L, H, D]; norms act on D, then → [B, H, L, D].
        let heads = |y: Array, n: usize, norm: &Option<RmsNorm>| -> Result<Array> {
            let y = ops::reshape(&y, &[b, l, n as i64, self.head_dim as i64])?;
            let y = match norm {
                Some(nm) => nm.forward(&y)?,
                None => y,
            };
            Ok(ops::transpose(&y, Some(&[0, 2, 1, 3]))?)
        };
        let [q, k, v]: [Array; 3] = self.qkv.forward(x)?.try_into().map_err(|_| {
            LmError::Generate("attention: the q/k/v projection gave the wrong parts".into())
        })?;
        Ok((
            heads(q, self.n_heads, &self.q_norm)?,
            heads(k, self.n_kv_heads, &self.k_norm)?,
            heads(v, self.n_kv_heads, &None)?,
        ))
    }

    /// RoPE at the cache's offset (or its device-held position during graph replay), the
    /// cache update, attention: → o `[B, H, L, D]`.
    fn attend(
        &self,
        q: &Array,
        k: &Array,
        v: &Array,
        mask: &AttentionMask,
        cache: Option<&mut KvCache>,
    ) -> Result<Array> {
        let (q, k) = match cache.as_ref().and_then(|c| c.position_array()) {
            Some(at) => (self.rope.forward_at(q, at)?, self.rope.forward_at(k, at)?),
            None => {
                let offset = cache.as_ref().map_or(0, |c| c.offset());
                (self.rope.forward(q, offset)?, self.rope.forward(k, offset)?)
            }
        };
        let (k, v) = match cache {
            Some(c) => c.update_and_fetch(&k, v)?,
            None => (k, v.clone()),
        };
        let m = match mask {
            AttentionMask::None => fast::Mask::None,
            AttentionMask::Causal => fast::Mask::Causal,
            AttentionMask::Array(a) => fast::Mask::Array(a),
        };
        Ok(fast::scaled_dot_product_attention(
            &q, &k, &v, self.scale, m,
        )?)
    }

    /// o `[B, H, L, D]` → `[B, L, dim]` through `o_proj`.
    fn output(&self, o: &Array) -> Result<Array> {
        let (b, l) = (o.shape()[0] as i64, o.shape()[2] as i64);
        let o = ops::reshape(&ops::transpose(o, Some(&[0, 2, 1, 3]))?, &[b, l, -1])?;
        Ok(self.o_proj.forward(&o)?)
    }
}

/// `down_proj(act(gate_proj(x)) * up_proj(x))`.
#[derive(Clone, Debug)]
pub struct Mlp {
    /// gate and up projections (fused into one on a GPU).
    pub gate_up: Parallel,
    pub down_proj: Linear,
    pub act: Activation,
}

impl Mlp {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        c: &ModelConfig,
        bias: bool,
        act: Activation,
    ) -> Result<Mlp> {
        let (d, h) = (c.hidden_size, c.intermediate_size);
        let gate_up = vec![
            w.linear(&format!("{prefix}.gate_proj"), d, h, bias)?,
            w.linear(&format!("{prefix}.up_proj"), d, h, bias)?,
        ];
        Ok(Mlp {
            gate_up: Parallel::new(gate_up, Parallel::fuse_by_default())?,
            down_proj: w.linear(&format!("{prefix}.down_proj"), h, d, bias)?,
            act,
        })
    }

    /// `x: [B, L, dim]` → `[B, L, dim]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let [g, u]: [Array; 2] = self.gate_up.forward(x)?.try_into().map_err(|_| {
            LmError::Generate("mlp: the gate/up projection gave the wrong parts".into())
        })?;
        let h = match self.act {
            // one element-wise pass (two kernels on a GPU composed)
            Activation::Silu => ops::silu_mul(&g, &u)?,
            Activation::GeluApprox => ops::multiply(&ops::gelu_approx(&g), &u)?,
        };
        Ok(self.down_proj.forward(&h)?)
    }
}

/// The mask for `l` new tokens: the cache's when one is passed, else mlx-lm's rule without a
/// cache (none for one token, an explicit array when a window cuts in, else causal).
pub fn make_mask(
    cache: Option<&KvCache>,
    l: usize,
    window: Option<usize>,
) -> Result<AttentionMask> {
    if let Some(c) = cache {
        return c.mask(l, window);
    }
    Ok(match window {
        _ if l == 1 => AttentionMask::None,
        Some(w) if l > w => AttentionMask::Array(causal_mask(l, 0, Some(w))?),
        _ => AttentionMask::Causal,
    })
}

/// Checks `tokens` is `[B, L]` of integers with `L > 0` and the caches match the layers.
pub fn check_inputs(tokens: &Array, caches: &[KvCache], n_layers: usize) -> Result<()> {
    if tokens.ndim() != 2 || tokens.shape()[1] == 0 || tokens.dtype().is_float() {
        return Err(LmError::Generate(format!(
            "model input must be integer token ids [batch, length>0], got {:?} {}",
            tokens.shape(),
            tokens.dtype()
        )));
    }
    if !caches.is_empty() && caches.len() != n_layers {
        return Err(LmError::Generate(format!(
            "{} caches passed for {n_layers} layers",
            caches.len()
        )));
    }
    Ok(())
}

/// Checks a ragged decode step: one token per sequence, each with one cache per layer.
pub fn check_rows(tokens: &[u32], caches: &[&mut [KvCache]], n_layers: usize) -> Result<()> {
    if tokens.is_empty() || tokens.len() != caches.len() {
        return Err(LmError::Generate(format!(
            "[forward_rows] needs one token and one cache list per sequence, got {} tokens and {} cache lists",
            tokens.len(),
            caches.len()
        )));
    }
    if let Some(c) = caches.iter().find(|c| c.len() != n_layers) {
        return Err(LmError::Generate(format!(
            "[forward_rows] {} caches passed for {n_layers} layers",
            c.len()
        )));
    }
    Ok(())
}

/// Each sequence's mask for one new token from its cache of layer `layer` (before the update).
pub fn row_masks(
    caches: &[&mut [KvCache]],
    layer: Option<usize>,
    window: Option<usize>,
) -> Result<Vec<AttentionMask>> {
    caches
        .iter()
        .map(|c| match layer {
            Some(i) => make_mask(c.get(i), 1, window),
            None => Ok(AttentionMask::None),
        })
        .collect()
}

/// The output head: an untied `lm_head` or the embedding table used as a linear layer.
#[derive(Clone, Debug)]
pub enum Head {
    Untied(Linear),
    Tied,
}

impl Head {
    /// `lm_head` when the checkpoint has it (or the config says untied), else tied.
    pub fn load(w: &mut Weights, c: &ModelConfig) -> Result<Head> {
        if w.contains("lm_head.weight") || !c.tie_word_embeddings {
            Ok(Head::Untied(w.linear(
                "lm_head",
                c.hidden_size,
                c.vocab_size,
                false,
            )?))
        } else {
            Ok(Head::Tied)
        }
    }

    /// `h: [B, L, dim]` → logits `[B, L, vocab]`.
    pub fn forward(&self, h: &Array, embed: &rmlx_nn::Embedding) -> Result<Array> {
        Ok(match self {
            Head::Untied(l) => l.forward(h)?,
            Head::Tied => embed.as_linear(h)?,
        })
    }
}
