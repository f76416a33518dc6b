//! Mixtral (mlx-lm's `mixtral.py`): the Llama block with a sparse mixture of experts in
//! `block_sparse_moe` on every layer. The router keeps the top `num_experts_per_tok` logits and
//! softmaxes over those; Hugging Face names the experts' projections `w1` (gate), `w3` (up) and
//! `w2` (down). The decoder is `qwen3_moe.rs`'s, without q/k norms.

use super::qwen3_moe::{MoeFlavor, MoeModel};
use crate::config::ModelConfig;
use crate::error::Result;
use rmlx_nn::{Routing, Weights};

/// Mixtral's flavor of the MoE decoder.
pub fn flavor() -> MoeFlavor {
    MoeFlavor {
        qk_norm: false,
        block: "block_sparse_moe",
        routing: Routing::TopKSoftmax,
        expert_names: [("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")],
    }
}

/// Builds a Mixtral model (`model_type: mixtral`).
pub fn load(config: ModelConfig, w: &mut Weights) -> Result<MoeModel> {
    MoeModel::load_flavor(config, w, flavor())
}
