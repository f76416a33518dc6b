//! Gemma 3 (text): local sliding-window layers with rotating caches and a global layer every
//! `sliding_window_pattern`-th, each with its own RoPE base; per-head q/k norms; `(1 + w)`
//! RMS norms, also around the attention and MLP outputs; embeddings scaled by sqrt(hidden);
//! a gelu-approx MLP; optional final logit soft-capping. Follows mlx-lm's `gemma3_text.py`.

use super::common::{
    activation_dtype, check_inputs, check_rows, make_mask, Activation, Attention, AttentionSpec,
    Head, Mlp, RowsStep,
};
use super::llama::last_position;
use super::LanguageModel;
use crate::cache::{AttentionMask, KvCache};
use crate::config::ModelConfig;
use crate::error::{LmError, Result};
use rmlx::{ops, Array, Dtype};
use rmlx_nn::{Embedding, Normed, RmsNorm, Rope, Weights};

/// One block (`model.layers.N`).
#[derive(Clone, Debug)]
pub struct DecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
    pub pre_feedforward_layernorm: RmsNorm,
    pub post_feedforward_layernorm: RmsNorm,
    /// A local (sliding-window) layer.
    pub is_sliding: bool,
}

/// `x + y`; in float16 computed in float32 and clipped to float16's range (mlx-lm's
/// `clip_residual`: Gemma's activations overflow float16 otherwise).
fn residual(x: &Array, y: &Array) -> Result<Array> {
    if x.dtype() != Dtype::F16 {
        return Ok(ops::add(x, y)?);
    }
    let s = ops::add(&ops::astype(x, Dtype::F32), &ops::astype(y, Dtype::F32))?;
    let bound = Array::scalar(65504.0f32);
    Ok(ops::astype(
        &ops::clip(&s, Some(&-&bound), Some(&bound))?,
        Dtype::F16,
    ))
}

impl DecoderLayer {
    /// `x: [B, L, dim]` → `[B, L, dim]`.
    fn forward(
        &self,
        x: &Array,
        mask: &AttentionMask,
        cache: Option<&mut KvCache>,
    ) -> Result<Array> {
        self.block(x, |a, h| a.forward(h, mask, cache, None))
    }

    /// The block around an attention call `attn(self_attn, x with its norm)` (shared or ragged
    /// caches). The pre-norms ride on the first products (`Linear::forward_normed`).
    fn block(
        &self,
        x: &Array,
        attn: impl FnOnce(&Attention, Normed) -> Result<Array>,
    ) -> Result<Array> {
        let r = attn(&self.self_attn, Normed::new(x, &self.input_layernorm))?;
        let h = residual(x, &self.post_attention_layernorm.forward(&r)?)?;
        let r = self
            .mlp
            .forward(Normed::new(&h, &self.pre_feedforward_layernorm), None)?;
        residual(&h, &self.post_feedforward_layernorm.forward(&r)?)
    }
}

/// The Gemma 3 text model.
#[derive(Clone, Debug)]
pub struct Gemma3 {
    pub config: ModelConfig,
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    pub lm_head: Head,
}

impl Gemma3 {
    /// Builds the model from `model.*` weights (`lm_head` absent: tied to the embedding).
    pub fn load(c: ModelConfig, w: &mut Weights) -> Result<Gemma3> {
        let window = c
            .sliding_window
            .ok_or_else(|| LmError::Config("gemma3: config.json needs `sliding_window`".into()))?;
        if window == 0 {
            return Err(LmError::Config(
                "gemma3: `sliding_window` must be positive".into(),
            ));
        }
        let eps = c.rms_norm_eps;
        let dim = c.hidden_size;
        let embed_tokens = w.embedding("model.embed_tokens", c.vocab_size, dim)?;
        let scale = c
            .query_pre_attn_scalar
            .unwrap_or(c.head_dim as f32)
            .powf(-0.5);
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let is_sliding = (i + 1) % c.sliding_window_pattern != 0;
            // Local layers: their own base, never scaled; global layers: rope_theta + scaling.
            let rope = if is_sliding {
                Rope::new(c.head_dim, false, c.rope_local_base_freq, None)?
            } else {
                Rope::new(c.head_dim, false, c.rope_theta, c.rope_scaling.as_ref())?
            };
            let spec = AttentionSpec {
                qkv_bias: false,
                o_bias: false,
                qk_norm: true,
                plus_one: true,
                rope,
                scale,
            };
            let norm =
                |w: &mut Weights, n: &str| w.rms_norm_plus_one(&format!("{p}.{n}"), dim, eps);
            layers.push(DecoderLayer {
                self_attn: Attention::load(w, &format!("{p}.self_attn"), &c, spec)?,
                mlp: Mlp::load(w, &format!("{p}.mlp"), &c, false, Activation::GeluApprox)?,
                input_layernorm: norm(w, "input_layernorm")?,
                post_attention_layernorm: norm(w, "post_attention_layernorm")?,
                pre_feedforward_layernorm: norm(w, "pre_feedforward_layernorm")?,
                post_feedforward_layernorm: norm(w, "post_feedforward_layernorm")?,
                is_sliding,
            });
        }
        let norm = w.rms_norm_plus_one("model.norm", dim, eps)?;
        let lm_head = if w.contains("lm_head.weight") {
            Head::load(w, &c)?
        } else {
            Head::Tied
        };
        Ok(Gemma3 {
            config: c,
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    fn window(&self) -> usize {
        self.config.sliding_window.unwrap_or(usize::MAX)
    }

    /// `tokens: [B, L]` → the residual stream after the last layer `[B, L, dim]` (`model.norm`
    /// not yet applied: the head takes it).
    fn hidden(&self, tokens: &Array, caches: &mut [KvCache]) -> Result<Array> {
        check_inputs(tokens, caches, self.layers.len())?;
        let l = tokens.shape()[1];
        let mut h = self.embed(tokens)?;
        // Masks are computed once, before any cache is updated, from the first layer of each kind.
        let first = |sliding: bool| self.layers.iter().position(|x| x.is_sliding == sliding);
        let mask_for = |i: Option<usize>, window: Option<usize>| -> Result<AttentionMask> {
            match i {
                Some(i) => make_mask(caches.get(i), l, window),
                None => Ok(AttentionMask::None),
            }
        };
        let global_mask = mask_for(first(false), None)?;
        let local_mask = mask_for(first(true), Some(self.window()))?;
        for (i, layer) in self.layers.iter().enumerate() {
            let mask = if layer.is_sliding {
                &local_mask
            } else {
                &global_mask
            };
            h = layer.forward(&h, mask, caches.get_mut(i))?;
        }
        Ok(h)
    }

    /// `tokens: [B, L]` → scaled embeddings `[B, L, dim]`.
    fn embed(&self, tokens: &Array) -> Result<Array> {
        // Activations in the norms' dtype (GGUF: f32 norms, f16 embedding scales).
        let h = self
            .embed_tokens
            .forward_as(tokens, activation_dtype(self.norm.weight.dtype()))?;
        // sqrt(hidden) rounded to bfloat16 first, then in h's dtype, as mlx-lm does.
        let s = rmlx::bf16::from_f32((self.config.hidden_size as f32).sqrt()).to_f32();
        Ok(&h * s)
    }

    /// The residual stream `h` after the last layer → logits (`model.norm` taken by the head).
    fn head(&self, h: &Array) -> Result<Array> {
        let logits = self
            .lm_head
            .forward(Normed::new(h, &self.norm), &self.embed_tokens)?;
        Ok(match self.config.final_logit_softcapping {
            Some(cap) if cap > 0.0 => ops::tanh(&(&logits / cap)) * cap,
            _ => logits,
        })
    }
}

impl LanguageModel for Gemma3 {
    fn forward(&self, tokens: &Array, caches: &mut [KvCache]) -> Result<Array> {
        let h = self.hidden(tokens, caches)?;
        self.head(&h)
    }

    fn forward_last(&self, tokens: &Array, caches: &mut [KvCache]) -> Result<Array> {
        let h = last_position(&self.hidden(tokens, caches)?)?;
        self.head(&h)
    }

    fn forward_rows(&self, tokens: &Array, caches: &mut [&mut [KvCache]]) -> Result<Array> {
        check_rows(tokens, caches, self.layers.len())?;
        let mut h = self.embed(tokens)?;
        let first = |sliding: bool| self.layers.iter().position(|x| x.is_sliding == sliding);
        let global = RowsStep::new(caches, first(false), None)?;
        let local = RowsStep::new(caches, first(true), Some(self.window()))?;
        for (i, layer) in self.layers.iter().enumerate() {
            let step = if layer.is_sliding { &local } else { &global };
            let mut lc: Vec<&mut KvCache> = caches.iter_mut().map(|c| &mut c[i]).collect();
            h = layer.block(&h, |a, x| a.forward_rows(x, step, &mut lc, None))?;
        }
        let h = last_position(&h)?;
        self.head(&h)
    }

    /// Rotating caches of `sliding_window` for local layers, standard ones for global layers.
    fn make_caches(&self) -> Vec<KvCache> {
        let w = self.window();
        self.layers
            .iter()
            .map(|l| {
                if l.is_sliding {
                    KvCache::rotating(w, 0).unwrap_or_else(|_| KvCache::standard())
                } else {
                    KvCache::standard()
                }
            })
            .collect()
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }
}
