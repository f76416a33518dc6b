//! Normalization layers over the fused `fast::rms_norm` / `fast::layer_norm`.

use crate::error::Result;
use rmlx::{fast, Array};

/// `x / rms(x) * weight` over the last axis. Gemma's `(1 + weight)` form is folded into
/// `weight` at load time (see `Weights::rms_norm_plus_one`).
#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub weight: Array,
    pub eps: f32,
}

impl RmsNorm {
    /// `x: [..., dim]` → same shape.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        Ok(fast::rms_norm(x, Some(&self.weight), self.eps)?)
    }
}

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last axis.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Option<Array>,
    pub bias: Option<Array>,
    pub eps: f32,
}

impl LayerNorm {
    /// `x: [..., dim]` → same shape.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        Ok(fast::layer_norm(
            x,
            self.weight.as_ref(),
            self.bias.as_ref(),
            self.eps,
        )?)
    }
}
