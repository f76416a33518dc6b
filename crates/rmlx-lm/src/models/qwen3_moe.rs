//! Qwen3-MoE (mlx-lm's `qwen3_moe.py`): the Qwen3 block (q/k RMS norms) whose MLP is, on every
//! `decoder_sparse_step`-th layer not in `mlp_only_layers`, a sparse mixture of experts: a
//! router `mlp.gate` picks `num_experts_per_tok` experts per token (softmax, then top k,
//! optionally renormalised) and `mlp.switch_mlp` runs them through `gather_qmm`.
//!
//! The decoder here is shared with Mixtral (`mixtral.rs`), which differs in names and routing.
//! Per-expert checkpoint tensors (`mlp.experts.E.gate_proj.weight`, Hugging Face's layout) are
//! stacked into `switch_mlp.*` at load, as mlx-lm's `sanitize` does.

use super::common::{
    activation_dtype, check_inputs, forward_rows_layers, make_mask, Activation, Attention,
    AttentionSpec, DecoderBlock, Head, Mlp,
};
use super::llama::last_position;
use super::LanguageModel;
use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::error::{LmError, Result};
use rmlx::{ops, Array};
use rmlx_nn::{route, Embedding, Linear, Normed, RmsNorm, Rope, Routing, SwitchGlu, Weights};

/// What differs between the MoE architectures built from this file.
#[derive(Clone, Copy, Debug)]
pub struct MoeFlavor {
    /// `q_norm`/`k_norm` on each head (Qwen3).
    pub qk_norm: bool,
    /// Module name of the sparse block (`mlp`, Mixtral's `block_sparse_moe`).
    pub block: &'static str,
    pub routing: Routing,
    /// Hugging Face per-expert projection names → `switch_mlp` names (gate, up, down).
    pub expert_names: [(&'static str, &'static str); 3],
}

/// Qwen3-MoE's flavor.
pub fn flavor(c: &ModelConfig) -> MoeFlavor {
    MoeFlavor {
        qk_norm: true,
        block: "mlp",
        routing: Routing::SoftmaxTopK {
            renormalize: c.norm_topk_prob,
        },
        expert_names: [
            ("gate_proj", "gate_proj"),
            ("up_proj", "up_proj"),
            ("down_proj", "down_proj"),
        ],
    }
}

/// Builds a Qwen3-MoE model (`model_type: qwen3_moe`).
pub fn load(config: ModelConfig, w: &mut Weights) -> Result<MoeModel> {
    let f = flavor(&config);
    MoeModel::load_flavor(config, w, f)
}

/// The sparse block: router plus experts.
#[derive(Clone, Debug)]
pub struct MoeBlock {
    pub gate: Linear,
    pub switch_mlp: SwitchGlu,
    pub top_k: usize,
    pub routing: Routing,
}

impl MoeBlock {
    /// Takes `{prefix}.gate` and `{prefix}.switch_mlp.*` (stacking per-expert tensors first).
    pub fn load(w: &mut Weights, prefix: &str, c: &ModelConfig, f: &MoeFlavor) -> Result<MoeBlock> {
        let (e, d, h) = (c.num_experts, c.hidden_size, c.moe_intermediate_size);
        stack_experts(w, prefix, e, &f.expert_names)?;
        let sw = |w: &mut Weights, name: &str, i: usize, o: usize| {
            w.switch_linear(&format!("{prefix}.switch_mlp.{name}"), e, i, o, false)
        };
        Ok(MoeBlock {
            gate: w.linear(&format!("{prefix}.gate"), d, e, false)?,
            switch_mlp: SwitchGlu {
                gate_proj: sw(w, "gate_proj", d, h)?,
                up_proj: sw(w, "up_proj", d, h)?,
                down_proj: sw(w, "down_proj", h, d)?,
            },
            top_k: c.num_experts_per_tok,
            routing: f.routing,
        })
    }

    /// `x: [B, L, dim]` (its pre-norm still to apply, where given) → `[B, L, dim]`, plus
    /// `residual` when given (one kernel fewer on a GPU than adding it after).
    pub fn forward(&self, x: Normed, residual: Option<&Array>) -> Result<Array> {
        // the router and the experts each take the norm into their product where they can
        // (`Linear::forward_normed`, `SwitchGlu::forward_weighted`), else one of them would
        // need the norm's output and the norm its own kernel; a prefill step (whose products
        // run the norm first anyway), or one where the norm is not fusable (the CPU), computes
        // it once
        let value;
        let rows: usize = x.x.shape()[..x.x.ndim() - 1].iter().product();
        let x = if rows > ops::DECODE_MAX_ROWS || x.fusable().is_none() {
            value = x.value()?;
            Normed::plain(&value)
        } else {
            x
        };
        // inds, scores: [B, L, k]
        let (inds, scores) = route(&self.gate.forward_normed(x)?, self.top_k, self.routing)?;
        Ok(self
            .switch_mlp
            .forward_weighted(x, &inds, &scores, residual)?)
    }
}

/// Stacks Hugging Face per-expert tensors `{prefix}.experts.E.{src}.{weight,scales,biases}` into
/// `{prefix}.switch_mlp.{dst}.*` `[E, ..]` (mlx-lm's `sanitize`); a no-op for stacked files.
pub fn stack_experts(
    w: &mut Weights,
    prefix: &str,
    n: usize,
    names: &[(&str, &str); 3],
) -> Result<()> {
    for (src, dst) in names {
        for part in ["weight", "scales", "biases"] {
            if !w.contains(&format!("{prefix}.experts.0.{src}.{part}")) {
                continue;
            }
            let mut parts = Vec::with_capacity(n);
            for e in 0..n {
                parts.push(w.take(&format!("{prefix}.experts.{e}.{src}.{part}"))?);
            }
            let s = ops::stack(&parts, 0)?;
            s.eval()?;
            w.insert(format!("{prefix}.switch_mlp.{dst}.{part}"), s);
        }
    }
    if w.contains(&format!("{prefix}.experts.{n}.{}.weight", names[0].0)) {
        return Err(LmError::Config(format!(
            "{prefix}: the checkpoint has more than the {n} experts the config declares"
        )));
    }
    Ok(())
}

/// A layer's feed-forward part.
#[derive(Clone, Debug)]
pub enum Ffn {
    Dense(Mlp),
    Sparse(MoeBlock),
}

/// One decoder block (`model.layers.N`).
#[derive(Clone, Debug)]
pub struct MoeLayer {
    pub self_attn: Attention,
    pub ffn: Ffn,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderBlock for MoeLayer {
    fn block(
        &self,
        x: &Array,
        attn: impl FnOnce(&Attention, Normed, &Array) -> Result<Array>,
    ) -> Result<Array> {
        let h = attn(&self.self_attn, Normed::new(x, &self.input_layernorm), x)?;
        let n = Normed::new(&h, &self.post_attention_layernorm);
        Ok(match &self.ffn {
            Ffn::Dense(m) => m.forward(n, Some(&h))?,
            Ffn::Sparse(m) => m.forward(n, Some(&h))?,
        })
    }
}

/// A decoder-only MoE language model (Qwen3-MoE, Mixtral).
#[derive(Clone, Debug)]
pub struct MoeModel {
    pub config: ModelConfig,
    pub embed_tokens: Embedding,
    pub layers: Vec<MoeLayer>,
    pub norm: RmsNorm,
    pub lm_head: Head,
}

impl MoeModel {
    /// Builds the model, taking `model.*` and `lm_head` out of `w`.
    pub fn load_flavor(c: ModelConfig, w: &mut Weights, f: MoeFlavor) -> Result<MoeModel> {
        if c.num_experts == 0 {
            return Err(LmError::Config(format!(
                "{}: config.json declares no experts (`num_experts` / `num_local_experts`)",
                c.model_type
            )));
        }
        let embed_tokens = w.embedding("model.embed_tokens", c.vocab_size, c.hidden_size)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let spec = AttentionSpec {
                qkv_bias: c.attention_bias,
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
            let sparse = !c.mlp_only_layers.contains(&i) && (i + 1) % c.decoder_sparse_step == 0;
            let block = format!("{p}.{}", f.block);
            let ffn = if sparse {
                Ffn::Sparse(MoeBlock::load(w, &block, &c, &f)?)
            } else {
                Ffn::Dense(Mlp::load(w, &block, &c, false, Activation::Silu)?)
            };
            layers.push(MoeLayer {
                self_attn: Attention::load(w, &format!("{p}.self_attn"), &c, spec)?,
                ffn,
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
        Ok(MoeModel {
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
        let mut h = self
            .embed_tokens
            .forward_as(tokens, activation_dtype(self.norm.weight.dtype()))?;
        let mask = make_mask(caches.first(), l, None)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let c = caches.get_mut(i);
            h = layer.block(&h, |a, x, r| a.forward(x, &mask, c, Some(r)))?;
        }
        Ok(h)
    }
}

impl LanguageModel for MoeModel {
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

    /// One product per weight and one routing for all rows (each row picks its own experts);
    /// attention per sequence ([`Attention::forward_rows`]).
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
