//! Llama (and Mistral, and the Qwen2/Qwen3 variants built from here): pre-norm decoder blocks
//! of grouped-query attention with RoPE and a SwiGLU MLP. Follows mlx-lm's `llama.py`.

use super::common::{
    activation_dtype, check_inputs, forward_rows_layers, make_mask, Activation, Attention,
    AttentionSpec, DecoderBlock, Head, Mlp,
};
use super::LanguageModel;
use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::error::Result;
use rmlx::{ops, Array};
use rmlx_nn::{Embedding, Normed, RmsNorm, Rope, Weights};

/// Per-family differences among the Llama-shaped models.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flavor {
    /// q/k/v projections carry a bias (Qwen2).
    pub qkv_bias: bool,
    /// `q_norm`/`k_norm` RMS norms on each head before RoPE (Qwen3).
    pub qk_norm: bool,
}

/// One decoder block (`model.layers.N`).
#[derive(Clone, Debug)]
pub struct DecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    /// `x: [B, L, dim]` → `[B, L, dim]`.
    fn forward(
        &self,
        x: &Array,
        mask: &crate::cache::AttentionMask,
        cache: Option<&mut KvCache>,
    ) -> Result<Array> {
        self.block(x, |a, h, r| a.forward(h, mask, cache, Some(r)))
    }
}

impl DecoderBlock for DecoderLayer {
    fn block(
        &self,
        x: &Array,
        attn: impl FnOnce(&Attention, Normed, &Array) -> Result<Array>,
    ) -> Result<Array> {
        let h = attn(&self.self_attn, Normed::new(x, &self.input_layernorm), x)?;
        self.mlp
            .forward(Normed::new(&h, &self.post_attention_layernorm), Some(&h))
    }
}

/// The Llama family's causal LM (`model.*` plus `lm_head` or a tied embedding).
#[derive(Clone, Debug)]
pub struct Llama {
    pub config: ModelConfig,
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    pub lm_head: Head,
}

impl Llama {
    /// Plain Llama/Mistral.
    pub fn load(config: ModelConfig, w: &mut Weights) -> Result<Llama> {
        Self::load_flavor(
            config,
            w,
            Flavor {
                qkv_bias: false,
                qk_norm: false,
            },
        )
    }

    /// Builds the model, taking `model.embed_tokens`, `model.layers.N.*`, `model.norm` and
    /// `lm_head` (absent when tied) out of `w`.
    pub fn load_flavor(c: ModelConfig, w: &mut Weights, f: Flavor) -> Result<Llama> {
        let embed_tokens = w.embedding("model.embed_tokens", c.vocab_size, c.hidden_size)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let spec = AttentionSpec {
                qkv_bias: f.qkv_bias || c.attention_bias,
                o_bias: c.attention_bias,
                qk_norm: f.qk_norm,
                plus_one: false,
                rope: Rope::new(
                    c.head_dim,
                    c.rope_traditional,
                    c.rope_theta,
                    c.rope_scaling.as_ref(),
                )?,
                scale: (c.head_dim as f32).powf(-0.5),
            };
            layers.push(DecoderLayer {
                self_attn: Attention::load(w, &format!("{p}.self_attn"), &c, spec)?,
                mlp: Mlp::load(w, &format!("{p}.mlp"), &c, c.mlp_bias, Activation::Silu)?,
                input_layernorm: w.rms_norm(
                    &format!("{p}.input_layernorm"),
                    c.hidden_size,
                    c.rms_norm_eps,
                )?,
                post_attention_layernorm: w.rms_norm(
                    &format!("{p}.post_attention_layernorm"),
                    c.hidden_size,
                    c.rms_norm_eps,
                )?,
            });
        }
        let norm = w.rms_norm("model.norm", c.hidden_size, c.rms_norm_eps)?;
        let lm_head = Head::load(w, &c)?;
        Ok(Llama {
            config: c,
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    /// `tokens: [B, L]` → the residual stream after the last layer `[B, L, dim]` (`model.norm`
    /// not yet applied: the head takes it).
    fn hidden(&self, tokens: &Array, caches: &mut [KvCache]) -> Result<Array> {
        check_inputs(tokens, caches, self.layers.len())?;
        let l = tokens.shape()[1];
        // Activations in the norms' dtype (GGUF: f32 norms, f16 embedding scales).
        let mut h = self
            .embed_tokens
            .forward_as(tokens, activation_dtype(self.norm.weight.dtype()))?;
        let mask = make_mask(caches.first(), l, None)?;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h, &mask, caches.get_mut(i))?;
        }
        Ok(h)
    }
}

impl LanguageModel for Llama {
    fn forward(&self, tokens: &Array, caches: &mut [KvCache]) -> Result<Array> {
        let h = self.hidden(tokens, caches)?;
        let h = Normed::new(&h, &self.norm);
        self.lm_head.forward(h, &self.embed_tokens)
    }

    fn forward_last(&self, tokens: &Array, caches: &mut [KvCache]) -> Result<Array> {
        let h = last_position(&self.hidden(tokens, caches)?)?;
        let h = Normed::new(&h, &self.norm);
        self.lm_head.forward(h, &self.embed_tokens)
    }

    fn forward_rows(&self, tokens: &Array, caches: &mut [&mut [KvCache]]) -> Result<Array> {
        let parts = (
            &self.embed_tokens,
            &self.layers[..],
            &self.norm,
            &self.lm_head,
        );
        forward_rows_layers(parts, tokens, caches)
    }

    fn make_caches(&self) -> Vec<KvCache> {
        (0..self.layers.len())
            .map(|_| KvCache::standard())
            .collect()
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

/// `h: [B, L, dim]` → `[B, dim]` at position L-1.
pub fn last_position(h: &Array) -> Result<Array> {
    let l = h.shape()[1] as i64;
    Ok(ops::squeeze(
        &ops::slice(h, &[0, l - 1, 0], &[i64::MAX, l, i64::MAX], &[1, 1, 1])?,
        &[1],
    )?)
}
