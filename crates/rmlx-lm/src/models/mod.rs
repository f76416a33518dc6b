//! Model architectures, one file per `model_type`, and the table that builds one from a config
//! and a weight map. The cache is passed in; models hold no state.

pub mod common;
pub mod gemma3;
pub mod llama;
pub mod mixtral;
pub mod quantized_attention;
pub mod qwen2;
pub mod qwen3;
pub mod qwen3_moe;

use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::error::{LmError, Result};
use rmlx::{ops, Array};
use rmlx_nn::Weights;

/// A causal language model.
pub trait LanguageModel: Send + Sync {
    /// `tokens: [B, L]` (u32) → logits `[B, L, vocab]`. `caches` is empty (no cache) or one per
    /// layer (from `make_caches`), updated with this step's keys and values.
    fn forward(&self, tokens: &Array, caches: &mut [KvCache]) -> Result<Array>;

    /// Like `forward`, but logits of the last position only, `[B, vocab]` (prefill needs no
    /// more; models override it to skip the output head for the other positions).
    fn forward_last(&self, tokens: &Array, caches: &mut [KvCache]) -> Result<Array> {
        let logits = self.forward(tokens, caches)?;
        let l = logits.shape()[1] as i64;
        Ok(ops::squeeze(
            &ops::slice(
                &logits,
                &[0, l - 1, 0],
                &[i64::MAX, l, i64::MAX],
                &[1, 1, 1],
            )?,
            &[1],
        )?)
    }

    /// A ragged decode step: row `b` of `tokens: [B, 1]` (u32) is the next token of sequence
    /// `b` and `caches[b]` its own per-layer caches (sequences may have any lengths) → logits
    /// `[B, vocab]`. The tokens are an array so that a recorded step can take new ones from
    /// device memory (`graph_rows`). Models override it to run each linear layer once over all
    /// B rows; this default runs the sequences one after the other.
    fn forward_rows(&self, tokens: &Array, caches: &mut [&mut [KvCache]]) -> Result<Array> {
        common::check_rows(tokens, caches, self.num_layers())?;
        let mut outs = Vec::with_capacity(caches.len());
        for (b, c) in caches.iter_mut().enumerate() {
            let b = b as i64;
            let t = ops::slice(tokens, &[b, 0], &[b + 1, 1], &[1, 1])?;
            outs.push(self.forward_last(&t, c)?);
        }
        Ok(ops::concatenate(&outs, 0)?)
    }

    /// One fresh cache per layer, of the kind each layer needs.
    fn make_caches(&self) -> Vec<KvCache>;

    fn config(&self) -> &ModelConfig;

    fn num_layers(&self) -> usize;
}

/// A boxed model of any architecture.
pub type Model = Box<dyn LanguageModel>;

type Constructor = fn(ModelConfig, &mut Weights) -> Result<Model>;

/// `model_type` → constructor. Adding an architecture is one file plus one line here.
const MODEL_TYPES: &[(&str, Constructor)] = &[
    ("llama", |c, w| Ok(Box::new(llama::Llama::load(c, w)?))),
    ("mistral", |c, w| Ok(Box::new(llama::Llama::load(c, w)?))),
    ("qwen2", |c, w| Ok(Box::new(qwen2::load(c, w)?))),
    ("qwen3", |c, w| Ok(Box::new(qwen3::load(c, w)?))),
    ("qwen3_moe", |c, w| Ok(Box::new(qwen3_moe::load(c, w)?))),
    ("mixtral", |c, w| Ok(Box::new(mixtral::load(c, w)?))),
    ("gemma3_text", |c, w| {
        Ok(Box::new(gemma3::Gemma3::load(c, w)?))
    }),
    ("gemma3", |c, w| Ok(Box::new(gemma3::Gemma3::load(c, w)?))),
];

/// mlx-lm's `sanitize` for mixture-of-experts checkpoints: Hugging Face's per-expert tensors
/// stacked into `switch_mlp.*` (a no-op for dense models and stacked files).
pub fn stack_moe_experts(config: &serde_json::Value, w: &mut Weights) -> Result<()> {
    let t = config.get("model_type").and_then(|t| t.as_str());
    if !matches!(t, Some("qwen3_moe" | "mixtral")) {
        return Ok(());
    }
    let c = ModelConfig::from_json(config)?;
    let f = match c.model_type.as_str() {
        "qwen3_moe" => qwen3_moe::flavor(&c),
        "mixtral" => mixtral::flavor(),
        _ => return Ok(()),
    };
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}.{}", f.block);
        qwen3_moe::stack_experts(w, &p, c.num_experts, &f.expert_names)?;
    }
    Ok(())
}

/// The `model_type`s this build can run.
pub fn supported_model_types() -> Vec<&'static str> {
    MODEL_TYPES.iter().map(|(n, _)| *n).collect()
}

/// Builds the model `config.model_type` names, taking its weights out of `weights`.
pub fn build(config: ModelConfig, weights: &mut Weights) -> Result<Model> {
    let ctor = MODEL_TYPES
        .iter()
        .find(|(n, _)| *n == config.model_type)
        .map(|(_, c)| *c)
        .ok_or_else(|| {
            LmError::Config(format!(
                "model_type `{}` is not supported (supported: {})",
                config.model_type,
                supported_model_types().join(", ")
            ))
        })?;
    ctor(config, weights)
}
