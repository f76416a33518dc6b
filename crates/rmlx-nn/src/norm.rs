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

/// A layer's input with its RMS norm still to apply: what a pre-norm block hands its attention
/// or MLP. Quantized products that read it take the norm inside (`Linear::forward_normed`: on
/// a GPU the int8 decode kernels normalise x as they quantize it, one launch fewer per norm);
/// anything else applies it first ([`Normed::value`]).
#[derive(Clone, Copy, Debug)]
pub struct Normed<'a> {
    pub x: &'a Array,
    /// `None`: `x` is the input as it is.
    pub norm: Option<&'a RmsNorm>,
}

impl<'a> Normed<'a> {
    /// `norm(x)`, not yet computed.
    pub fn new(x: &'a Array, norm: &'a RmsNorm) -> Normed<'a> {
        Normed {
            x,
            norm: Some(norm),
        }
    }

    /// `x` itself (already normalised, or no norm).
    pub fn plain(x: &'a Array) -> Normed<'a> {
        Normed { x, norm: None }
    }

    /// The normalised input, as an array.
    pub fn value(&self) -> Result<Array> {
        match self.norm {
            Some(n) => n.forward(self.x),
            None => Ok(self.x.clone()),
        }
    }

    /// The norm to take into a product: `None` where there is none, where the backend would
    /// apply it as its own op anyway (the CPU: then it is applied once, by [`Normed::value`]),
    /// or where `RMLX_FUSE_NORM=0`.
    pub fn fusable(&self) -> Option<&'a RmsNorm> {
        self.norm
            .filter(|_| fuse_norms() && rmlx::ops::norm_inside_products())
    }
}

/// Whether norms ride on the op after them (`Normed`, `Rope::forward_normed_at`);
/// `RMLX_FUSE_NORM=0` keeps every norm an op of its own (an ablation switch).
pub(crate) fn fuse_norms() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::switches::enabled(&ON, "RMLX_FUSE_NORM")
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
