//! `Linear` and `Embedding`: dense or MLX-affine quantized, decided by the weights found.

use crate::error::{Error, Result};
use crate::norm::{Normed, RmsNorm};
use rmlx::{ops, Array};

/// Group size and bit width of an affine-quantized matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantParams {
    pub group_size: usize,
    pub bits: usize,
}

/// `y = x @ W.T + b` with `W: [out, in]`; the quantized form keeps MLX's packed layout
/// (`wq: [out, in*bits/32]` u32, `scales`/`biases: [out, in/group_size]`).
#[derive(Clone, Debug)]
pub enum Linear {
    Dense {
        weight: Array,
        bias: Option<Array>,
    },
    Quantized {
        wq: Array,
        scales: Array,
        biases: Array,
        bias: Option<Array>,
        q: QuantParams,
    },
}

impl Linear {
    /// Input features.
    pub fn in_features(&self) -> usize {
        match self {
            Linear::Dense { weight, .. } => weight.shape()[1],
            Linear::Quantized { wq, q, .. } => wq.shape()[1] * 32 / q.bits,
        }
    }

    /// The added bias, if any.
    pub fn bias(&self) -> Option<&Array> {
        match self {
            Linear::Dense { bias, .. } | Linear::Quantized { bias, .. } => bias.as_ref(),
        }
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        match self {
            Linear::Dense { weight, .. } => weight.shape()[0],
            Linear::Quantized { wq, .. } => wq.shape()[0],
        }
    }

    /// `x: [..., in]` → `[..., out]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let (y, bias) = match self {
            Linear::Dense { weight, bias } => {
                (ops::matmul(x, &ops::transpose(weight, None)?)?, bias)
            }
            Linear::Quantized {
                wq,
                scales,
                biases,
                bias,
                q,
            } => (
                ops::quantized_matmul(x, wq, scales, biases, true, q.group_size, q.bits)?,
                bias,
            ),
        };
        Ok(match bias {
            Some(b) => ops::add(&y, b)?,
            None => y,
        })
    }

    /// `self.forward(norm(x))` for `x` = [`Normed`]: a quantized layer takes the norm into its
    /// product (`ops::rms_norm_quantized_matmul`), anything else applies it first.
    pub fn forward_normed(&self, x: Normed) -> Result<Array> {
        match (self, x.fusable()) {
            (
                Linear::Quantized {
                    wq,
                    scales,
                    biases,
                    bias,
                    q,
                },
                Some(n),
            ) => {
                let y = normed_product(x.x, n, [wq, scales, biases], q)?;
                Ok(match bias {
                    Some(b) => ops::add(&y, b)?,
                    None => y,
                })
            }
            _ => self.forward(&x.value()?),
        }
    }

    /// `residual + self.forward(x)` (a residual connection after the layer): one op for a
    /// quantized layer without bias, whose product adds the residual as it stores it on a GPU
    /// (`ops::quantized_matmul_add`); the same values either way.
    pub fn forward_add(&self, x: &Array, residual: &Array) -> Result<Array> {
        // `RMLX_FUSE_RESIDUAL=0`: always the two ops (an ablation switch)
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if !crate::switches::enabled(&ON, "RMLX_FUSE_RESIDUAL") {
            return Ok(ops::add(&self.forward(x)?, residual)?);
        }
        match self {
            Linear::Quantized {
                wq,
                scales,
                biases,
                bias: None,
                q,
            } => Ok(ops::quantized_matmul_add(
                x,
                wq,
                scales,
                biases,
                residual,
                true,
                q.group_size,
                q.bits,
            )?),
            _ => Ok(ops::add(&self.forward(x)?, residual)?),
        }
    }
}

/// A token-embedding table `[vocab, dim]`, dense or quantized; `as_linear` serves tied heads.
#[derive(Clone, Debug)]
pub enum Embedding {
    Dense {
        weight: Array,
    },
    Quantized {
        wq: Array,
        scales: Array,
        biases: Array,
        q: QuantParams,
    },
}

impl Embedding {
    /// Rows of the table.
    pub fn vocab_size(&self) -> usize {
        match self {
            Embedding::Dense { weight } => weight.shape()[0],
            Embedding::Quantized { wq, .. } => wq.shape()[0],
        }
    }

    /// The dtype the looked-up rows come in (a quantized table gives its scales' dtype).
    pub fn dtype(&self) -> rmlx::Dtype {
        match self {
            Embedding::Dense { weight } => weight.dtype(),
            Embedding::Quantized { scales, .. } => scales.dtype(),
        }
    }

    /// `ids: [...]` (integer) → `[..., dim]`. A quantized table gathers the packed rows first
    /// and dequantizes only those, so a lookup never touches the whole table.
    pub fn forward(&self, ids: &Array) -> Result<Array> {
        if ids.dtype().is_float() {
            return Err(Error::Weight(format!(
                "embedding ids must be integers, got {}",
                ids.dtype()
            )));
        }
        match self {
            Embedding::Dense { weight } => Ok(ops::take(weight, ids, Some(0))?),
            Embedding::Quantized {
                wq,
                scales,
                biases,
                q,
            } => {
                let rows = ops::take(wq, ids, Some(0))?;
                let s = ops::take(scales, ids, Some(0))?;
                let b = ops::take(biases, ids, Some(0))?;
                Ok(ops::dequantize(&rows, &s, &b, q.group_size, q.bits)?)
            }
        }
    }

    /// `forward` with the rows in `dtype`. A quantized table's gathered scales and biases are
    /// cast before dequantizing, so f16 GGUF scales give exact f32 rows (as llama.cpp's
    /// `get_rows`), not f16-rounded ones.
    pub fn forward_as(&self, ids: &Array, dtype: rmlx::Dtype) -> Result<Array> {
        match self {
            Embedding::Quantized {
                wq,
                scales,
                biases,
                q,
            } if scales.dtype() != dtype => {
                if ids.dtype().is_float() {
                    return Err(Error::Weight(format!(
                        "embedding ids must be integers, got {}",
                        ids.dtype()
                    )));
                }
                let rows = ops::take(wq, ids, Some(0))?;
                let s = ops::astype(&ops::take(scales, ids, Some(0))?, dtype);
                let b = ops::astype(&ops::take(biases, ids, Some(0))?, dtype);
                Ok(ops::dequantize(&rows, &s, &b, q.group_size, q.bits)?)
            }
            _ => Ok(ops::astype(&self.forward(ids)?, dtype)),
        }
    }

    /// [`Embedding::as_linear`] of a [`Normed`] input: a quantized table takes the norm into
    /// its product (`Linear::forward_normed`).
    pub fn as_linear_normed(&self, x: Normed) -> Result<Array> {
        match (self, x.fusable()) {
            (
                Embedding::Quantized {
                    wq,
                    scales,
                    biases,
                    q,
                },
                Some(n),
            ) => normed_product(x.x, n, [wq, scales, biases], q),
            _ => self.as_linear(&x.value()?),
        }
    }

    /// The table used as an output head: `x: [..., dim]` → logits `[..., vocab]`.
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        match self {
            Embedding::Dense { weight } => Ok(ops::matmul(x, &ops::transpose(weight, None)?)?),
            Embedding::Quantized {
                wq,
                scales,
                biases,
                q,
            } => Ok(ops::quantized_matmul(
                x,
                wq,
                scales,
                biases,
                true,
                q.group_size,
                q.bits,
            )?),
        }
    }
}

/// `rms_norm(x) @ dequant(w).T` of packed `[wq, scales, biases]` (`ops::rms_norm_quantized_matmul`).
fn normed_product(
    x: &Array,
    n: &RmsNorm,
    [wq, s, b]: [&Array; 3],
    q: &QuantParams,
) -> Result<Array> {
    Ok(ops::rms_norm_quantized_matmul(
        x,
        &n.weight,
        n.eps,
        wq,
        s,
        b,
        q.group_size,
        q.bits,
    )?)
}
