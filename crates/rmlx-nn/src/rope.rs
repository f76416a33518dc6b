//! Rotary position embedding and its context-extension variants, in one place for every model:
//! plain (optionally `linear`-scaled), `llama3` and `yarn`. The variants differ only in the
//! per-pair frequencies (and yarn's input scale), so all of them call `fast::rope`.

use crate::error::{Error, Result};
use rmlx::{fast, ops, Array};

/// A `rope_scaling` block of a model config.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Positions divided by `factor`.
    Linear { factor: f32 },
    /// Llama 3.1: long wavelengths stretched by `factor`, a smooth ramp between.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
    /// YaRN (NTK-by-parts plus an attention temperature folded into the input scale).
    Yarn {
        factor: f32,
        original_max_position_embeddings: f32,
        beta_fast: f32,
        beta_slow: f32,
        mscale: f32,
        mscale_all_dim: f32,
    },
}

/// A RoPE module: rotates the first `dims` features of `[..., L, head_dim]` by position.
#[derive(Clone, Debug)]
pub struct Rope {
    pub dims: usize,
    pub traditional: bool,
    base: Option<f32>,
    scale: f32,
    /// Per-pair periods (`dims / 2`), MLX's `freqs` argument, when a scaling variant sets them.
    freqs: Option<Array>,
    /// Input multiplier on the rotated features (yarn's mscale), 1 otherwise.
    mscale: f32,
}

impl Rope {
    /// `dims` rotated features, `base` theta, optional scaling.
    pub fn new(
        dims: usize,
        traditional: bool,
        base: f32,
        scaling: Option<&RopeScaling>,
    ) -> Result<Rope> {
        if dims == 0 || !dims.is_multiple_of(2) {
            return Err(Error::Config(format!(
                "rope dims must be even and positive, got {dims}"
            )));
        }
        let plain = Rope {
            dims,
            traditional,
            base: Some(base),
            scale: 1.0,
            freqs: None,
            mscale: 1.0,
        };
        // MLX computes the default periods as base ** (arange(0, dims, 2) / dims) in float32.
        let periods: Vec<f32> = (0..dims / 2)
            .map(|i| (base as f64).powf((2 * i) as f64 / dims as f64) as f32)
            .collect();
        let Some(s) = scaling else { return Ok(plain) };
        match *s {
            RopeScaling::Linear { factor } => {
                check_factor(factor)?;
                Ok(Rope {
                    scale: 1.0 / factor,
                    ..plain
                })
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                check_factor(factor)?;
                let old = original_max_position_embeddings;
                let (low_wl, high_wl) = (old / low_freq_factor, old / high_freq_factor);
                let freqs = periods
                    .iter()
                    .map(|&p| {
                        let wl = 2.0 * std::f32::consts::PI * p;
                        let f = if wl > low_wl { p * factor } else { p };
                        if wl > high_wl && wl < low_wl {
                            let smooth =
                                (old / wl - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            f / ((1.0 - smooth) / factor + smooth)
                        } else {
                            f
                        }
                    })
                    .collect();
                Ok(Rope {
                    base: None,
                    freqs: Some(Array::from_vec::<f32>(freqs)),
                    ..plain
                })
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
            } => {
                check_factor(factor)?;
                let d = dims as f32;
                let corr = |rot: f32| {
                    d * (original_max_position_embeddings / (rot * 2.0 * std::f32::consts::PI)).ln()
                        / (2.0 * base.ln())
                };
                let low = corr(beta_fast).floor().max(0.0);
                let mut high = corr(beta_slow).ceil().min(d - 1.0);
                if low == high {
                    high += 0.001; // mlx-lm's guard against a zero-width ramp
                }
                let get_mscale = |m: f32| {
                    if factor <= 1.0 {
                        1.0
                    } else {
                        0.1 * m * factor.ln() + 1.0
                    }
                };
                let freqs = periods
                    .iter()
                    .enumerate()
                    .map(|(i, &extra)| {
                        let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                        let mask = 1.0 - ramp;
                        let inter = factor * extra;
                        inter * extra / (inter * mask + extra * (1.0 - mask))
                    })
                    .collect();
                Ok(Rope {
                    base: None,
                    freqs: Some(Array::from_vec::<f32>(freqs)),
                    mscale: get_mscale(mscale) / get_mscale(mscale_all_dim),
                    ..plain
                })
            }
        }
    }

    /// `x: [B, H, L, head_dim]`, positions `offset .. offset + L`.
    pub fn forward(&self, x: &Array, offset: usize) -> Result<Array> {
        let offset = i32::try_from(offset)
            .map_err(|_| Error::Config(format!("rope offset {offset} too large")))?;
        self.forward_at(x, &Array::scalar(offset))
    }

    /// Like [`Rope::forward`], the position taken from an i32 array (one per batch row, or one
    /// for all) that may live in device memory.
    pub fn forward_at(&self, x: &Array, offset: &Array) -> Result<Array> {
        let x = if self.mscale != 1.0 {
            self.scale_rotated(x)?
        } else {
            x.clone()
        };
        Ok(fast::rope(
            &x,
            self.dims,
            self.traditional,
            self.base,
            self.scale,
            offset,
            self.freqs.as_ref(),
        )?)
    }

    /// [`Rope::forward_at`] of `rms_norm(x)` with weight `norm` (`[R, D]`, a row per head of
    /// `x: [B, R, L, D]`, or `[D]`) and `eps`: one op (`fast::rms_norm_rope`, one kernel on a
    /// GPU) unless a yarn scale applies first or `RMLX_FUSE_NORM=0`, then the two.
    pub fn forward_normed_at(
        &self,
        x: &Array,
        (norm, eps): (&Array, f32),
        offset: &Array,
    ) -> Result<Array> {
        let Some(r) = self.fused_spec(true) else {
            return self.forward_at(&fast::rms_norm_heads(x, norm, eps)?, offset);
        };
        Ok(r.rotate(x, Some((norm, eps)), offset)?)
    }

    /// This rotation as the fused ops take it (`fast::rms_norm_rope`, `fast::rope_kv_write`), of
    /// inputs RMS-normalised inside the op where `normed`; `None` where it must run by itself:
    /// an input scale (yarn's mscale) applies first, or a norm stays apart (`RMLX_FUSE_NORM=0`).
    pub fn fused_spec(&self, normed: bool) -> Option<fast::RopeSpec<'_>> {
        (self.mscale == 1.0 && (!normed || crate::norm::fuse_norms())).then_some(fast::RopeSpec {
            dims: self.dims,
            traditional: self.traditional,
            base: self.base,
            scale: self.scale,
            freqs: self.freqs.as_ref(),
        })
    }

    /// Multiplies the first `dims` features by `mscale` (all of them in the common case).
    fn scale_rotated(&self, x: &Array) -> Result<Array> {
        let hd = *x.shape().last().unwrap_or(&0);
        if hd == self.dims {
            return Ok(x * self.mscale);
        }
        let nd = x.ndim();
        let (mut start, mut stop) = (
            vec![0i64; nd],
            x.shape().iter().map(|&s| s as i64).collect::<Vec<_>>(),
        );
        let step = vec![1i64; nd];
        stop[nd - 1] = self.dims as i64;
        let head = ops::slice(x, &start, &stop, &step)?;
        start[nd - 1] = self.dims as i64;
        stop[nd - 1] = hd as i64;
        let tail = ops::slice(x, &start, &stop, &step)?;
        Ok(ops::concatenate(&[&head * self.mscale, tail], -1)?)
    }
}

fn check_factor(f: f32) -> Result<()> {
    if f.is_finite() && f > 0.0 {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "rope_scaling factor must be positive, got {f}"
        )))
    }
}
