//! Qwen3: the Llama block with per-head RMS norms on queries and keys before RoPE, no q/k/v
//! bias, and a `head_dim` that need not be `hidden_size / heads` (mlx-lm's `qwen3.py`).

use super::llama::{Flavor, Llama};
use crate::config::ModelConfig;
use crate::error::Result;
use rmlx_nn::Weights;

/// Builds a Qwen3 model (`model_type: qwen3`).
pub fn load(config: ModelConfig, w: &mut Weights) -> Result<Llama> {
    Llama::load_flavor(
        config,
        w,
        Flavor {
            qkv_bias: false,
            qk_norm: true,
        },
    )
}
