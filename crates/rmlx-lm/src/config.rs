//! `ModelConfig`: the fields of `config.json` the model files read, with each family's
//! defaults. A GGUF file's metadata is first turned into the same JSON (see `load.rs`), so
//! there is one parser.

use crate::error::{LmError, Result};
use rmlx_nn::RopeScaling;
use serde_json::Value;

/// Architecture hyper-parameters (HF `config.json` names).
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_traditional: bool,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: Option<usize>,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    /// Gemma 3: local layers attend to this many previous tokens.
    pub sliding_window: Option<usize>,
    /// Gemma 3: every `sliding_window_pattern`-th layer is global.
    pub sliding_window_pattern: usize,
    pub rope_local_base_freq: f32,
    pub query_pre_attn_scalar: Option<f32>,
    pub final_logit_softcapping: Option<f32>,
    /// `eos_token_id` from the config (one or many), if given.
    pub eos_token_ids: Vec<u32>,
    /// Mixture of experts: experts per MoE layer (`num_experts`, Mixtral's
    /// `num_local_experts`); 0 for dense models.
    pub num_experts: usize,
    /// Experts each token is routed to.
    pub num_experts_per_tok: usize,
    /// Hidden size of each expert (Qwen3-MoE's `moe_intermediate_size`; else
    /// `intermediate_size`).
    pub moe_intermediate_size: usize,
    /// Renormalise the top-k routing weights to sum to 1 (Qwen3-MoE's `norm_topk_prob`).
    pub norm_topk_prob: bool,
    /// Every `decoder_sparse_step`-th layer is MoE, except `mlp_only_layers` (Qwen3-MoE).
    pub decoder_sparse_step: usize,
    pub mlp_only_layers: Vec<usize>,
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn req_usize(v: &Value, key: &str) -> Result<usize> {
    get(v, key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .ok_or_else(|| {
            LmError::Config(format!(
                "config.json: `{key}` is missing or not a non-negative integer"
            ))
        })
}

fn opt_usize(v: &Value, key: &str) -> Result<Option<usize>> {
    match get(v, key) {
        None => Ok(None),
        Some(x) => x.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
            LmError::Config(format!(
                "config.json: `{key}` must be a non-negative integer, got {x}"
            ))
        }),
    }
}

fn opt_f32(v: &Value, key: &str) -> Result<Option<f32>> {
    match get(v, key) {
        None => Ok(None),
        Some(x) => x.as_f64().map(|x| Some(x as f32)).ok_or_else(|| {
            LmError::Config(format!("config.json: `{key}` must be a number, got {x}"))
        }),
    }
}

fn opt_bool(v: &Value, key: &str) -> Result<Option<bool>> {
    match get(v, key) {
        None => Ok(None),
        Some(x) => x.as_bool().map(Some).ok_or_else(|| {
            LmError::Config(format!(
                "config.json: `{key}` must be true or false, got {x}"
            ))
        }),
    }
}

impl ModelConfig {
    /// Parses a `config.json` value (text-model fields; a Gemma 3 multimodal config's
    /// `text_config` is used when present).
    pub fn from_json(root: &Value) -> Result<ModelConfig> {
        let model_type = get(root, "model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| LmError::Config("config.json: `model_type` is missing".into()))?
            .to_string();
        let v = match get(root, "text_config") {
            Some(t) if model_type == "gemma3" => t,
            _ => root,
        };
        let gemma = model_type.starts_with("gemma3");
        let hidden_size = req_usize(v, "hidden_size")?;
        let num_attention_heads = req_usize(v, "num_attention_heads")?;
        if num_attention_heads == 0 || hidden_size == 0 {
            return Err(LmError::Config(
                "config.json: `hidden_size` and `num_attention_heads` must be positive".into(),
            ));
        }
        let num_key_value_heads =
            opt_usize(v, "num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(LmError::Config(format!(
                "config.json: num_attention_heads ({num_attention_heads}) must be a multiple of num_key_value_heads ({num_key_value_heads})"
            )));
        }
        let head_dim = opt_usize(v, "head_dim")?.unwrap_or(hidden_size / num_attention_heads);
        let eos_token_ids = match get(root, "eos_token_id") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_u64)
                .map(|x| x as u32)
                .collect(),
            Some(x) => x.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            None => vec![],
        };
        let intermediate_size = req_usize(v, "intermediate_size")?;
        let num_experts = match opt_usize(v, "num_experts")? {
            Some(n) => n,
            None => opt_usize(v, "num_local_experts")?.unwrap_or(0),
        };
        let num_experts_per_tok = opt_usize(v, "num_experts_per_tok")?.unwrap_or(0);
        if num_experts > 0 && (num_experts_per_tok == 0 || num_experts_per_tok > num_experts) {
            return Err(LmError::Config(format!(
                "config.json: num_experts_per_tok ({num_experts_per_tok}) must be between 1 and the number of experts ({num_experts})"
            )));
        }
        let mlp_only_layers = match get(v, "mlp_only_layers") {
            None => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_u64().map(|x| x as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    LmError::Config("config.json: `mlp_only_layers` must list layer numbers".into())
                })?,
            Some(x) => {
                return Err(LmError::Config(format!(
                    "config.json: `mlp_only_layers` must be a list, got {x}"
                )))
            }
        };
        Ok(ModelConfig {
            hidden_size,
            num_hidden_layers: req_usize(v, "num_hidden_layers")?,
            intermediate_size,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: opt_usize(v, "vocab_size")?.unwrap_or(if gemma { 262144 } else { 0 }),
            rms_norm_eps: opt_f32(v, "rms_norm_eps")?.unwrap_or(if gemma { 1e-6 } else { 1e-5 }),
            rope_theta: opt_f32(v, "rope_theta")?.unwrap_or(if gemma {
                1_000_000.0
            } else {
                10_000.0
            }),
            rope_traditional: opt_bool(v, "rope_traditional")?.unwrap_or(false),
            rope_scaling: parse_rope_scaling(get(v, "rope_scaling"))?,
            max_position_embeddings: opt_usize(v, "max_position_embeddings")?,
            // Gemma 3 always ties; HF's default for the others is tied too.
            tie_word_embeddings: opt_bool(v, "tie_word_embeddings")?.unwrap_or(true),
            attention_bias: opt_bool(v, "attention_bias")?.unwrap_or(false),
            mlp_bias: opt_bool(v, "mlp_bias")?.unwrap_or(false),
            sliding_window: opt_usize(v, "sliding_window")?,
            sliding_window_pattern: opt_usize(v, "sliding_window_pattern")?.unwrap_or(6).max(1),
            rope_local_base_freq: opt_f32(v, "rope_local_base_freq")?.unwrap_or(10_000.0),
            query_pre_attn_scalar: opt_f32(v, "query_pre_attn_scalar")?,
            final_logit_softcapping: opt_f32(v, "final_logit_softcapping")?,
            eos_token_ids,
            num_experts,
            num_experts_per_tok,
            moe_intermediate_size: opt_usize(v, "moe_intermediate_size")?
                .unwrap_or(intermediate_size),
            norm_topk_prob: opt_bool(v, "norm_topk_prob")?.unwrap_or(false),
            decoder_sparse_step: opt_usize(v, "decoder_sparse_step")?.unwrap_or(1).max(1),
            mlp_only_layers,
            model_type,
        })
    }
}

/// `rope_scaling` → `RopeScaling` (None for absent or `default`; unknown kinds are errors).
fn parse_rope_scaling(v: Option<&Value>) -> Result<Option<RopeScaling>> {
    let Some(v) = v else { return Ok(None) };
    let kind = get(v, "rope_type")
        .or_else(|| get(v, "type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let f = |k: &str, d: f32| -> Result<f32> { Ok(opt_f32(v, k)?.unwrap_or(d)) };
    let factor = || -> Result<f32> {
        opt_f32(v, "factor")?.ok_or_else(|| {
            LmError::Config(format!(
                "config.json: rope_scaling of type `{kind}` needs `factor`"
            ))
        })
    };
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear { factor: factor()? }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: f("low_freq_factor", 1.0)?,
            high_freq_factor: f("high_freq_factor", 4.0)?,
            original_max_position_embeddings: f("original_max_position_embeddings", 8192.0)?,
        }),
        "yarn" => Some(RopeScaling::Yarn {
            factor: factor()?,
            original_max_position_embeddings: f("original_max_position_embeddings", 4096.0)?,
            beta_fast: f("beta_fast", 32.0)?,
            beta_slow: f("beta_slow", 1.0)?,
            mscale: f("mscale", 1.0)?,
            mscale_all_dim: f("mscale_all_dim", 0.0)?,
        }),
        other => {
            return Err(LmError::Config(format!(
                "config.json: rope_scaling type `{other}` is not supported (supported: default, linear, llama3, yarn)"
            )))
        }
    })
}
