//! Qwen2: the Llama block with a bias on the q/k/v projections (mlx-lm's `qwen2.py`). The
//! block itself lives in `llama.rs`; only the differences are stated here.

use super::llama::{Flavor, Llama};
use crate::config::ModelConfig;
use crate::error::Result;
use rmlx_nn::Weights;

/// Builds a Qwen2 model (`model_type: qwen2`).
pub fn load(config: ModelConfig, w: &mut Weights) -> Result<Llama> {
    Llama::load_flavor(
        config,
        w,
        Flavor {
            qkv_bias: true,
            qk_norm: false,
        },
    )
}
