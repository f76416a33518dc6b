//! KV caches passed into the model (the model holds no state), following mlx-lm's `cache.py`:
//! - [`KvCache::Standard`]: preallocated in steps of 256 positions, written with `slice_update`;
//! - [`KvCache::Rotating`]: a sliding window of `max_size` positions keeping the first `keep`;
//! - [`KvCache::Quantized`]: 8/4-bit affine groups along `head_dim`, dequantized on fetch; the
//!   models' attention can read it packed instead ([`KvCache::update_and_fetch_packed`],
//!   `models::quantized_attention`, opt-in), as mlx-lm's does.
//!
//! Every cache takes keys/values `[B, n_kv_heads, L, head_dim]` and returns everything cached so
//! far in the same layout. Ask for the attention mask with [`KvCache::mask`] *before*
//! `update_and_fetch` (it describes the `l` new queries against what the cache will hold).
//!
//! Why `slice_update` on a preallocated buffer: arrays are immutable, so each step builds a new
//! buffer node; with the ops that exist this costs one copy of the buffer per step (O(capacity)),
//! the same as growing by concatenation, and the returned `keys[.., :offset, :]` is a zero-copy
//! view. A backend that donates a uniquely held input buffer makes it a true in-place write.

use crate::error::{LmError, Result};
use rmlx::{ops, Array, Dtype};
use std::collections::HashMap;
use std::path::Path;

/// Positions added at a time when a cache grows (mlx-lm's `step`).
pub const STEP: usize = 256;

/// The mask `fast::scaled_dot_product_attention` should use for the new queries.
#[derive(Clone, Debug)]
pub enum AttentionMask {
    /// Every query sees every cached key.
    None,
    /// Causal, aligned to the end of the keys (query `i` sees keys `..= i + S - L`).
    Causal,
    /// A boolean array (true = attend), broadcastable to `[B, Hq, L, S]`; shape `[L, S]`.
    Array(Array),
}

/// The incremental cache: a buffer of `capacity >= offset` positions.
#[derive(Clone, Debug, Default)]
pub struct StandardCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: usize,
    /// Set while decoding by graph replay (`graph_decode.rs`): the position of the next
    /// token as an i32 `[1]` array in device memory. Writes go there and attention spans the
    /// whole buffer under a mask, so one recorded step serves every position up to capacity.
    at: Option<Array>,
}

/// A sliding-window cache of at most `max_size` positions; the first `keep` are never evicted.
#[derive(Clone, Debug)]
pub struct RotatingCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: usize,
    max_size: usize,
    keep: usize,
    /// Where the next single-token write goes in the (possibly rotated) buffer.
    idx: usize,
}

/// Packed affine-quantized rows: `(wq u32 [B, H, positions, D*bits/32], scales, biases [B, H, positions, D/g])`.
pub type QBuf = (Array, Array, Array);

/// Keys and values stored quantized (affine, `bits` per element, groups along `head_dim`).
#[derive(Clone, Debug)]
pub struct QuantizedCache {
    keys: Option<QBuf>,
    values: Option<QBuf>,
    offset: usize,
    bits: usize,
    group_size: usize,
    /// As [`StandardCache`]'s: the device-held position of the next token during graph replay
    /// (the quantized rows are written there and attention spans the whole buffers under a mask).
    at: Option<Array>,
}

/// A quantized cache's first `offset` positions as stored (views of its buffers).
#[derive(Clone, Debug)]
pub struct PackedKv {
    pub keys: QBuf,
    pub values: QBuf,
    pub group_size: usize,
    pub bits: usize,
}

/// What attention reads after a cache write: keys and values `[B, H, S, D]`, or a quantized
/// cache's packed rows.
#[derive(Clone, Debug)]
pub enum Fetched {
    Dense(Array, Array),
    Packed(PackedKv),
}

/// One layer's KV cache.
#[derive(Clone, Debug)]
pub enum KvCache {
    Standard(StandardCache),
    Rotating(RotatingCache),
    Quantized(QuantizedCache),
}

fn gen_err(msg: impl Into<String>) -> LmError {
    LmError::Generate(msg.into())
}

/// Whether new float caches on the CPU keep f32 keys/values in f16 (see [`fresh_dtype`];
/// `RMLX_CPU_KV_F16=1` turns it on).
static CPU_KV_F16: rmlx_nn::switches::ProcessSwitch =
    rmlx_nn::switches::ProcessSwitch::new("RMLX_CPU_KV_F16");

/// Stores the f32 keys/values of new caches on the CPU as f16 (`on`) or f32, for this process
/// (the environment's `RMLX_CPU_KV_F16=1` sets the default: off).
pub fn set_cpu_kv_f16(on: bool) {
    CPU_KV_F16.set(on);
}

/// The dtype models store keys/values of dtype `t` in, in a new float cache: `t`, or f16 for
/// f32 activations on the CPU where [`set_cpu_kv_f16`] asks for it, as llama.cpp's CPU default
/// does (the CPU's attention reads f16 K/V under f32 queries as they are). Half the cache's
/// memory; SmolLM2 at context 576 then reads 13 instead of 26 MB of K/V per token beside
/// ~100 MB of weights, but converting it costs more than that saves there: generation 3-4%
/// slower, peak RSS 197 → 169 MiB (docs/PERF.md). Off by default: MLX keeps the activations'
/// dtype, and the reference tests compare against it.
pub fn fresh_dtype(t: Dtype) -> Dtype {
    let cpu = rmlx::current_device().kind == rmlx::DeviceType::Cpu;
    if t == Dtype::F32 && cpu && CPU_KV_F16.get() {
        Dtype::F16
    } else {
        t
    }
}

/// The positions a write of `k`, `v` adds (at least one).
fn new_positions(k: &Array, v: &Array) -> Result<usize> {
    let [_, _, l, _] = kv_dims(k, v)?;
    if l == 0 {
        return Err(gen_err(
            "[cache] update_and_fetch needs at least one new position",
        ));
    }
    Ok(l)
}

/// `[B, H, L, D]` of a keys/values pair, checked to agree.
fn kv_dims(k: &Array, v: &Array) -> Result<[usize; 4]> {
    if k.ndim() != 4 || v.ndim() != 4 {
        return Err(gen_err(format!(
            "[cache] keys and values must be [B, n_kv_heads, L, head_dim], got {:?} and {:?}",
            k.shape(),
            v.shape()
        )));
    }
    if k.shape()[..3] != v.shape()[..3] {
        return Err(gen_err(format!(
            "[cache] keys {:?} and values {:?} disagree on [B, H, L]",
            k.shape(),
            v.shape()
        )));
    }
    let s = k.shape();
    Ok([s[0], s[1], s[2], s[3]])
}

/// Checks that new rows fit the buffer they are written into (same B, H, D).
fn check_fits(buf: &Array, new: &Array, what: &str) -> Result<()> {
    let (b, n) = (buf.shape(), new.shape());
    if b[0] != n[0] || b[1] != n[1] || b[3] != n[3] {
        return Err(gen_err(format!(
            "[cache] new {what} {:?} do not match the cached {what} {:?} in batch, heads or head_dim",
            n, b
        )));
    }
    Ok(())
}

/// `x[.., start:stop, :]` along axis 2.
fn seq_slice(x: &Array, start: usize, stop: usize) -> Result<Array> {
    Ok(ops::slice(
        x,
        &[0, 0, start as i64],
        &[i64::MAX, i64::MAX, stop as i64],
        &[1, 1, 1],
    )?)
}

/// Writes `new` into `buf` at sequence position `at` (axis 2).
fn seq_write(buf: &Array, new: &Array, at: usize) -> Result<Array> {
    Ok(ops::slice_update(buf, new, &[0, 0, at as i64], &[1, 1, 1])?)
}

/// `buf` with room for `extra` more positions after `used` (mlx-lm's growth rule: drop the
/// unused tail when it is not step-aligned, then append whole steps of zeros).
fn grow(buf: Option<&Array>, used: usize, extra: usize, like: &Array) -> Result<Array> {
    let s = like.shape();
    let n_steps = extra.div_ceil(STEP);
    let zeros = ops::zeros(&[s[0], s[1], n_steps * STEP, s[3]], like.dtype());
    match buf {
        None => Ok(zeros),
        Some(b) => {
            let b = if !used.is_multiple_of(STEP) {
                seq_slice(b, 0, used)?
            } else {
                b.clone()
            };
            Ok(ops::concatenate(&[b, zeros], 2)?)
        }
    }
}

/// mlx-lm's `create_causal_mask(n, offset, window)`: `[n, offset + n]`, true where query
/// `offset + i` may attend key `j` (`j <= offset + i` and, with a window, `offset + i - j < w`).
pub fn causal_mask(n: usize, offset: usize, window: Option<usize>) -> Result<Array> {
    let s = offset + n;
    let mut m = vec![0u8; n * s];
    for i in 0..n {
        let q = offset + i;
        let lo = window.map_or(0, |w| (q + 1).saturating_sub(w));
        for j in lo..=q {
            m[i * s + j] = 1;
        }
    }
    Ok(Array::from_bytes(&m, &[n, s], Dtype::Bool)?)
}

/// Standard/quantized masks (mlx-lm's `create_attention_mask`), skipping the explicit array
/// when the window cannot cut anything off.
fn plain_mask(l: usize, offset: usize, window: Option<usize>) -> Result<AttentionMask> {
    match window {
        Some(w) if offset + l > w => Ok(AttentionMask::Array(causal_mask(l, offset, Some(w))?)),
        _ if l == 1 => Ok(AttentionMask::None),
        _ => Ok(AttentionMask::Causal),
    }
}

impl StandardCache {
    /// Positions the buffers hold (0 before the first write).
    pub fn capacity(&self) -> usize {
        self.keys.as_ref().map_or(0, |x| x.shape()[2])
    }

    /// One token written at the device-held position `at`; returns the whole buffers.
    fn update_at(&mut self, k: &Array, v: &Array, at: &Array) -> Result<(Array, Array)> {
        let [_, _, l, _] = kv_dims(k, v)?;
        let (Some(kb), Some(vb)) = (&self.keys, &self.values) else {
            return Err(gen_err(
                "[cache] a device-positioned write needs an allocated cache",
            ));
        };
        if l != 1 || self.offset >= self.capacity() {
            return Err(gen_err(format!(
                "[cache] a device-positioned write takes one position below the capacity {} (offset {}, {l} new)",
                self.capacity(),
                self.offset
            )));
        }
        check_fits(kb, k, "keys")?;
        check_fits(vb, v, "values")?;
        let kb = ops::slice_update_at(kb, k, at, 2)?;
        let vb = ops::slice_update_at(vb, v, at, 2)?;
        self.offset += 1;
        self.keys = Some(kb.clone());
        self.values = Some(vb.clone());
        Ok((kb, vb))
    }

    fn update_and_fetch(&mut self, k: &Array, v: &Array) -> Result<(Array, Array)> {
        if let Some(at) = self.at.clone() {
            return self.update_at(k, v, &at);
        }
        let [_, _, l, _] = kv_dims(k, v)?;
        let prev = self.offset;
        let cap = self.keys.as_ref().map_or(0, |x| x.shape()[2]);
        if let (Some(kb), Some(vb)) = (&self.keys, &self.values) {
            check_fits(kb, k, "keys")?;
            check_fits(vb, v, "values")?;
        }
        if self.keys.is_none() || prev + l > cap {
            self.keys = Some(grow(self.keys.as_ref(), prev, l, k)?);
            self.values = Some(grow(self.values.as_ref(), prev, l, v)?);
        }
        let (kb, vb) = (
            self.keys.as_ref().expect("grown"),
            self.values.as_ref().expect("grown"),
        );
        let (kb, vb) = (seq_write(kb, k, prev)?, seq_write(vb, v, prev)?);
        self.offset += l;
        let out = (
            seq_slice(&kb, 0, self.offset)?,
            seq_slice(&vb, 0, self.offset)?,
        );
        self.keys = Some(kb);
        self.values = Some(vb);
        Ok(out)
    }
}

impl RotatingCache {
    /// Keep the first `keep` positions and drop the next `trim` ones, then append `append`.
    fn trim_cat(&self, trim: usize, x: &Array, append: Option<&Array>) -> Result<Array> {
        let mut parts = if trim > 0 {
            let n = x.shape()[2];
            vec![
                seq_slice(x, 0, self.keep)?,
                seq_slice(x, trim + self.keep, n)?,
            ]
        } else {
            vec![x.clone()]
        };
        parts.extend(append.cloned());
        parts.retain(|p| p.shape()[2] > 0);
        if parts.is_empty() {
            return seq_slice(x, 0, 0);
        }
        Ok(ops::concatenate(&parts, 2)?)
    }

    /// The buffer in temporal order, without the unused tail.
    fn temporal_order(&self, x: &Array) -> Result<Array> {
        let n = x.shape()[2];
        if self.idx == n {
            Ok(x.clone())
        } else if self.idx < self.offset {
            let parts = [
                seq_slice(x, 0, self.keep)?,
                seq_slice(x, self.idx, n)?,
                seq_slice(x, self.keep, self.idx)?,
            ];
            let parts: Vec<Array> = parts.into_iter().filter(|p| p.shape()[2] > 0).collect();
            Ok(ops::concatenate(&parts, 2)?)
        } else {
            seq_slice(x, 0, self.idx)
        }
    }

    /// Several new positions (prefill): reorder, trim to `max_size - 1` old positions so every
    /// new query keeps a full window, append. Returns up to `max_size - 1 + L` positions.
    fn update_concat(&mut self, k: &Array, v: &Array) -> Result<(Array, Array)> {
        let (nk, nv) = match (&self.keys, &self.values) {
            (Some(kb), Some(vb)) => {
                let (kb, vb) = (self.temporal_order(kb)?, self.temporal_order(vb)?);
                let len = kb.shape()[2];
                let trim = (len + 1).saturating_sub(self.max_size);
                (
                    self.trim_cat(trim, &kb, Some(k))?,
                    self.trim_cat(trim, &vb, Some(v))?,
                )
            }
            _ => (k.clone(), v.clone()),
        };
        self.offset += k.shape()[2];
        self.idx = nk.shape()[2];
        self.keys = Some(nk.clone());
        self.values = Some(nv.clone());
        Ok((nk, nv))
    }

    /// One new position (decode): grow up to `max_size`, then overwrite the oldest slot.
    fn update_in_place(&mut self, k: &Array, v: &Array) -> Result<(Array, Array)> {
        let prev = self.offset;
        let cur = self.keys.as_ref().map_or(0, |x| x.shape()[2]);
        if self.keys.is_none() || (prev >= cur && cur < self.max_size) {
            let new_size = STEP.min(self.max_size - prev.min(self.max_size)).max(1);
            let grow_one = |b: Option<&Array>, like: &Array| -> Result<Array> {
                let s = like.shape();
                let z = ops::zeros(&[s[0], s[1], new_size, s[3]], like.dtype());
                Ok(match b {
                    Some(b) => ops::concatenate(&[b.clone(), z], 2)?,
                    None => z,
                })
            };
            self.keys = Some(grow_one(self.keys.as_ref(), k)?);
            self.values = Some(grow_one(self.values.as_ref(), v)?);
            self.idx = prev;
        }
        let (mut kb, mut vb) = (
            self.keys.clone().expect("grown"),
            self.values.clone().expect("grown"),
        );
        // A prefill may have left more than max_size positions: trim back to the window.
        let over = kb.shape()[2].saturating_sub(self.max_size);
        if over > 0 {
            kb = self.trim_cat(over, &kb, None)?;
            vb = self.trim_cat(over, &vb, None)?;
            self.idx = self.max_size;
        }
        if self.idx == self.max_size {
            self.idx = self.keep;
        }
        kb = seq_write(&kb, k, self.idx)?;
        vb = seq_write(&vb, v, self.idx)?;
        self.offset += 1;
        self.idx += 1;
        let n = kb.shape()[2];
        let out = if self.offset < n {
            (
                seq_slice(&kb, 0, self.offset)?,
                seq_slice(&vb, 0, self.offset)?,
            )
        } else {
            (kb.clone(), vb.clone())
        };
        self.keys = Some(kb);
        self.values = Some(vb);
        Ok(out)
    }

    fn mask(&self, l: usize, window: Option<usize>) -> Result<AttentionMask> {
        if l > 1 {
            let w = window.unwrap_or(self.max_size);
            let offset = self.offset.min(self.max_size - 1);
            return if offset + l > w {
                Ok(AttentionMask::Array(causal_mask(l, offset, Some(w))?))
            } else {
                Ok(AttentionMask::Causal)
            };
        }
        let Some(w) = window else {
            return Ok(AttentionMask::None);
        };
        // A window narrower than the buffer: mask the slots older than `w` (the buffer rotates,
        // so the kept slots are a rolled run ending at the slot written now).
        if self.offset >= w && self.max_size > w {
            let idx = if self.idx >= self.max_size {
                0
            } else {
                self.idx
            };
            let size = if self.offset < self.max_size {
                self.offset + 1
            } else {
                self.max_size
            };
            let base: Vec<u8> = (0..size).map(|j| (j >= size - w) as u8).collect();
            let shift = (idx + 1) % size;
            let rolled: Vec<u8> = (0..size).map(|j| base[(j + size - shift) % size]).collect();
            return Ok(AttentionMask::Array(Array::from_bytes(
                &rolled,
                &[1, size],
                Dtype::Bool,
            )?));
        }
        Ok(AttentionMask::None)
    }
}

/// Quantizes `x [B, H, L, D]` along `D` into `(wq, scales, biases)` each `[B, H, L, _]`.
fn quantize4(x: &Array, group_size: usize, bits: usize) -> Result<QBuf> {
    let s = x.shape().to_vec();
    let flat = ops::reshape(x, &[-1, s[3] as i64])?;
    let (wq, sc, bi) = ops::quantize(&flat, group_size, bits)?;
    let back = |a: &Array| ops::reshape(a, &[s[0] as i64, s[1] as i64, s[2] as i64, -1]);
    Ok((back(&wq)?, back(&sc)?, back(&bi)?))
}

/// Packed rows `[B, H, n, ·]` back to `[B, H, n, D]`.
fn dequantize4(q: &QBuf, group_size: usize, bits: usize) -> Result<Array> {
    let s = q.0.shape().to_vec();
    let flat = |a: &Array| -> Result<Array> {
        let last = a.shape()[3] as i64;
        Ok(ops::reshape(a, &[-1, last])?)
    };
    let w = ops::dequantize(&flat(&q.0)?, &flat(&q.1)?, &flat(&q.2)?, group_size, bits)?;
    Ok(ops::reshape(
        &w,
        &[s[0] as i64, s[1] as i64, s[2] as i64, -1],
    )?)
}

impl QuantizedCache {
    fn update_and_fetch(&mut self, k: &Array, v: &Array) -> Result<(Array, Array)> {
        self.write(k, v)?;
        // the whole buffers, then the written positions as a view: dequantizing the packed
        // rows sliced first needed a copy of each of the six (non-contiguous) slices every step
        // (at most STEP - 1 positions more are dequantized than are read)
        let (kb, vb) = self.buffers()?;
        let (k, v) = (
            dequantize4(kb, self.group_size, self.bits)?,
            dequantize4(vb, self.group_size, self.bits)?,
        );
        if self.at.is_some() {
            // a recorded step attends over the whole buffers under the position mask
            return Ok((k, v));
        }
        let n = self.offset;
        Ok((seq_slice(&k, 0, n)?, seq_slice(&v, 0, n)?))
    }

    /// Positions the buffers hold (0 before the first write).
    fn capacity(&self) -> usize {
        self.keys.as_ref().map_or(0, |q| q.0.shape()[2])
    }

    /// The packed key and value buffers (after a write).
    fn buffers(&self) -> Result<(&QBuf, &QBuf)> {
        self.keys.as_ref().zip(self.values.as_ref()).ok_or_else(|| {
            gen_err("[cache] a quantized cache holds nothing before its first write")
        })
    }

    /// The cache's positions so far, packed (after a write); the whole buffers at a
    /// device-held position (the mask then says which positions count).
    fn packed(&self) -> Result<PackedKv> {
        let n = if self.at.is_some() {
            self.capacity()
        } else {
            self.offset
        };
        let rows = |q: &QBuf| -> Result<QBuf> {
            Ok((
                seq_slice(&q.0, 0, n)?,
                seq_slice(&q.1, 0, n)?,
                seq_slice(&q.2, 0, n)?,
            ))
        };
        let (kb, vb) = self.buffers()?;
        Ok(PackedKv {
            keys: rows(kb)?,
            values: rows(vb)?,
            group_size: self.group_size,
            bits: self.bits,
        })
    }

    /// Quantizes and appends `k`, `v` `[B, H, L, D]`.
    fn write(&mut self, k: &Array, v: &Array) -> Result<()> {
        let [_, _, l, dk] = kv_dims(k, v)?;
        let dv = v.shape()[3];
        let (g, bits) = (self.group_size, self.bits);
        if !dk.is_multiple_of(g) || !dv.is_multiple_of(g) {
            return Err(gen_err(format!(
                "[cache] head_dim {dk}/{dv} must be a multiple of the KV quantization group size {g}"
            )));
        }
        let prev = self.offset;
        let cap = self.capacity();
        let room = l == 1 && self.keys.is_some() && prev < cap;
        if self.at.is_some() && !room {
            return Err(gen_err(format!(
                "[cache] a device-positioned write takes one position below the capacity {cap} (offset {prev}, {l} new)"
            )));
        }
        if room {
            // one position into the buffers' room, at the device-held position (graph replay)
            // or the offset: quantized and written in place by one kernel on a GPU (the op
            // checks the shapes against the buffers)
            let pos = match &self.at {
                Some(at) => at.clone(),
                None => Array::from_slice(&[prev as i32], &[1])?,
            };
            let (kb, vb) = self.buffers()?;
            let (kb, vb) = rmlx::fast::quantized_kv_write(k, v, &pos, kb, vb, g, bits)?;
            self.offset += 1;
            self.keys = Some(kb);
            self.values = Some(vb);
            return Ok(());
        }
        let qk = quantize4(k, g, bits)?;
        let qv = quantize4(v, g, bits)?;
        if let (Some(kb), Some(vb)) = (&self.keys, &self.values) {
            check_fits(&kb.0, &qk.0, "keys")?;
            check_fits(&vb.0, &qv.0, "values")?;
        }
        if self.keys.is_none() || prev + l > cap {
            let g3 = |b: Option<&QBuf>, n: &QBuf| -> Result<QBuf> {
                Ok((
                    grow(b.map(|b| &b.0), prev, l, &n.0)?,
                    grow(b.map(|b| &b.1), prev, l, &n.1)?,
                    grow(b.map(|b| &b.2), prev, l, &n.2)?,
                ))
            };
            self.keys = Some(g3(self.keys.as_ref(), &qk)?);
            self.values = Some(g3(self.values.as_ref(), &qv)?);
        }
        let w3 = |b: &QBuf, n: &QBuf| -> Result<QBuf> {
            Ok((
                seq_write(&b.0, &n.0, prev)?,
                seq_write(&b.1, &n.1, prev)?,
                seq_write(&b.2, &n.2, prev)?,
            ))
        };
        let kb = w3(self.keys.as_ref().expect("grown"), &qk)?;
        let vb = w3(self.values.as_ref().expect("grown"), &qv)?;
        self.offset += l;
        self.keys = Some(kb);
        self.values = Some(vb);
        Ok(())
    }
}

impl KvCache {
    /// An empty incremental cache.
    pub fn standard() -> KvCache {
        KvCache::Standard(StandardCache::default())
    }

    /// An empty sliding-window cache of `max_size` positions that never evicts the first `keep`.
    pub fn rotating(max_size: usize, keep: usize) -> Result<KvCache> {
        if max_size == 0 || keep >= max_size {
            return Err(gen_err(format!(
                "[cache] a rotating cache needs max_size > keep and max_size > 0, got max_size {max_size}, keep {keep}"
            )));
        }
        Ok(KvCache::Rotating(RotatingCache {
            keys: None,
            values: None,
            offset: 0,
            max_size,
            keep,
            idx: 0,
        }))
    }

    /// `caches` (a model's `make_caches`) with every standard (full-attention) cache replaced by
    /// an empty quantized one (mlx-lm's `--kv-bits`); sliding-window caches stay as they are.
    pub fn quantize_standard(caches: &mut [KvCache], bits: usize, group_size: usize) -> Result<()> {
        for c in caches
            .iter_mut()
            .filter(|c| matches!(c, KvCache::Standard(_)))
        {
            *c = KvCache::quantized(bits, group_size)?;
        }
        Ok(())
    }

    /// An empty quantized cache (`bits` in {2, 3, 4, 5, 6, 8}; `group_size` in {32, 64, 128}).
    pub fn quantized(bits: usize, group_size: usize) -> Result<KvCache> {
        if ![2, 3, 4, 5, 6, 8].contains(&bits) || ![32, 64, 128].contains(&group_size) {
            return Err(gen_err(format!(
                "[cache] KV quantization supports bits 2, 3, 4, 5, 6, 8 and group sizes 32, 64, 128, got bits {bits}, group size {group_size}"
            )));
        }
        Ok(KvCache::Quantized(QuantizedCache {
            keys: None,
            values: None,
            offset: 0,
            bits,
            group_size,
            at: None,
        }))
    }

    /// Tokens seen so far (the position of the next token).
    pub fn offset(&self) -> usize {
        match self {
            KvCache::Standard(c) => c.offset,
            KvCache::Rotating(c) => c.offset,
            KvCache::Quantized(c) => c.offset,
        }
    }

    /// Switches a standard or quantized cache to device-positioned writes at `at` (an i32 `[1]`
    /// array), or back with `None`; false (and nothing changed) for a rotating cache.
    pub fn set_position_array(&mut self, at: Option<Array>) -> bool {
        match self {
            KvCache::Standard(c) => c.at = at,
            KvCache::Quantized(c) => c.at = at,
            KvCache::Rotating(_) => return false,
        }
        true
    }

    /// The positions an attention after this step's write spans, as an i32 `[1]` array: the
    /// device-held position plus one while writes are device-positioned (graph replay), else
    /// the offset.
    pub fn attended_len(&self) -> Result<Array> {
        Ok(match self.position_array() {
            Some(at) => ops::add(at, &Array::scalar(1i32))?,
            None => Array::from_slice(&[self.offset() as i32], &[1])?,
        })
    }

    /// The device-held position of the next token, while writes are device-positioned.
    pub fn position_array(&self) -> Option<&Array> {
        match self {
            KvCache::Standard(c) => c.at.as_ref(),
            KvCache::Quantized(c) => c.at.as_ref(),
            KvCache::Rotating(_) => None,
        }
    }

    /// For a decode step that writes its keys and values itself (`fast::rope_kv_write`): the
    /// whole key and value buffers and the device-held position, where this is a standard
    /// cache writing at a device-held position (graph replay) with room for one more token and
    /// buffers of `n_kv` heads of `d` features in `dtype`. Hand the written buffers back with
    /// [`KvCache::commit_written`] before evaluating anything, so the old ones are held only
    /// by the op (written in place, not copied).
    pub fn write_target(
        &self,
        n_kv: usize,
        d: usize,
        dtype: Dtype,
    ) -> Option<(Array, Array, Array)> {
        let KvCache::Standard(c) = self else {
            return None;
        };
        let (kb, vb, at) = (c.keys.as_ref()?, c.values.as_ref()?, c.at.as_ref()?);
        let fits = |b: &Array| {
            b.ndim() == 4 && b.shape()[1] == n_kv && b.shape()[3] == d && b.dtype() == dtype
        };
        (c.offset < c.capacity() && fits(kb) && fits(vb) && vb.shape() == kb.shape())
            .then(|| (kb.clone(), vb.clone(), at.clone()))
    }

    /// Takes the buffers a [`KvCache::write_target`] step wrote (one token more) and returns
    /// them, as `update_and_fetch` does at a device-held position.
    pub fn commit_written(&mut self, kb: Array, vb: Array) -> Result<(Array, Array)> {
        let KvCache::Standard(c) = self else {
            return Err(gen_err(
                "[cache] only a standard cache takes written buffers",
            ));
        };
        if c.at.is_none()
            || c.offset >= c.capacity()
            || kb.shape() != c.keys.as_ref().map_or(&[][..], |k| k.shape())
        {
            return Err(gen_err(format!(
                "[cache] written buffers {:?} do not match this cache (capacity {}, offset {})",
                kb.shape(),
                c.capacity(),
                c.offset
            )));
        }
        c.offset += 1;
        c.keys = Some(kb.clone());
        c.values = Some(vb.clone());
        Ok((kb, vb))
    }

    /// The key and value buffers of a standard cache (whole capacity).
    pub fn buffers(&self) -> Option<(Array, Array)> {
        match self {
            KvCache::Standard(c) => Some((c.keys.clone()?, c.values.clone()?)),
            _ => None,
        }
    }

    /// Every buffer the cache holds (keys then values; a quantized cache's as codes, scales,
    /// biases each): what a step that writes in place must leave where it was.
    pub fn storage(&self) -> Vec<Array> {
        let two = |k: &Option<Array>, v: &Option<Array>| k.iter().chain(v).cloned().collect();
        match self {
            KvCache::Standard(c) => two(&c.keys, &c.values),
            KvCache::Rotating(c) => two(&c.keys, &c.values),
            KvCache::Quantized(c) => c
                .keys
                .iter()
                .chain(&c.values)
                .flat_map(|q| [q.0.clone(), q.1.clone(), q.2.clone()])
                .collect(),
        }
    }

    /// Counts `n` positions as written by someone else (a replayed graph wrote them into the
    /// buffers): standard and quantized caches, within capacity.
    pub fn advance(&mut self, n: usize) -> Result<()> {
        let cap = self.capacity();
        match self {
            KvCache::Standard(StandardCache { offset, .. })
            | KvCache::Quantized(QuantizedCache { offset, .. })
                if *offset + n <= cap =>
            {
                *offset += n;
                Ok(())
            }
            _ => Err(gen_err(format!(
                "[cache] cannot advance a {} cache by {n} positions",
                self.class_name()
            ))),
        }
    }

    /// Grows a standard cache that already holds positions so that `n` more fit without growing
    /// (evaluated: the buffers exist afterwards). Other caches, and empty ones, are left alone.
    /// A recorded decode step (`graph_rows`) lasts until some cache is full: this makes that
    /// last `n` steps.
    pub fn reserve(&mut self, n: usize) -> Result<()> {
        if let KvCache::Standard(c) = self {
            if let (Some(kb), Some(vb)) = (&c.keys, &c.values) {
                if c.offset + n > c.capacity() {
                    let k = grow(Some(kb), c.offset, n, kb)?;
                    let v = grow(Some(vb), c.offset, n, vb)?;
                    rmlx::eval(&[k.clone(), v.clone()])?;
                    c.keys = Some(k);
                    c.values = Some(v);
                }
            }
        }
        Ok(())
    }

    /// Positions the cache can hold before it grows (standard and quantized caches; 0 for a
    /// rotating one).
    pub fn capacity(&self) -> usize {
        match self {
            KvCache::Standard(c) => c.capacity(),
            KvCache::Quantized(c) => c.capacity(),
            KvCache::Rotating(_) => 0,
        }
    }

    /// Positions currently held (at most `max_size` for a rotating cache).
    pub fn size(&self) -> usize {
        match self {
            KvCache::Rotating(c) => c.offset.min(c.max_size),
            _ => self.offset(),
        }
    }

    /// Whether nothing was cached yet.
    pub fn is_empty(&self) -> bool {
        match self {
            KvCache::Standard(c) => c.keys.is_none(),
            KvCache::Rotating(c) => c.keys.is_none(),
            KvCache::Quantized(c) => c.keys.is_none(),
        }
    }

    /// The dtype a model should hand this cache keys/values of dtype `t` in: what a float
    /// cache already holds, else [`fresh_dtype`]; a quantized cache takes `t`.
    pub fn storage_dtype(&self, t: Dtype) -> Dtype {
        let held = match self {
            KvCache::Standard(c) => c.keys.as_ref().map(Array::dtype),
            KvCache::Rotating(c) => c.keys.as_ref().map(Array::dtype),
            KvCache::Quantized(_) => Some(t),
        };
        held.unwrap_or_else(|| fresh_dtype(t))
    }

    /// Appends keys/values `[B, n_kv_heads, L, head_dim]` and returns all keys and values to
    /// attend over, `[B, n_kv_heads, S, head_dim]` (dequantized for a quantized cache).
    pub fn update_and_fetch(&mut self, k: &Array, v: &Array) -> Result<(Array, Array)> {
        let l = new_positions(k, v)?;
        match self {
            KvCache::Standard(c) => c.update_and_fetch(k, v),
            KvCache::Rotating(c) if l == 1 => c.update_in_place(k, v),
            KvCache::Rotating(c) => c.update_concat(k, v),
            KvCache::Quantized(c) => c.update_and_fetch(k, v),
        }
    }

    /// As [`KvCache::update_and_fetch`], but a quantized cache gives its packed rows instead of
    /// dequantizing them (attention then reads them in place).
    pub fn update_and_fetch_packed(&mut self, k: &Array, v: &Array) -> Result<Fetched> {
        match self {
            KvCache::Quantized(c) => {
                new_positions(k, v)?;
                c.write(k, v)?;
                Ok(Fetched::Packed(c.packed()?))
            }
            _ => {
                let (k, v) = self.update_and_fetch(k, v)?;
                Ok(Fetched::Dense(k, v))
            }
        }
    }

    /// The mask for `l` new queries given what the cache holds now (call before
    /// `update_and_fetch`); `window` = the layer's sliding window, if any.
    pub fn mask(&self, l: usize, window: Option<usize>) -> Result<AttentionMask> {
        if let (Some(at), None) = (self.position_array(), window) {
            // keys 0..=at of the whole buffer: [1, capacity]
            let cap = self.capacity();
            let j = ops::arange(0.0, cap as f64, 1.0, Dtype::I32)?;
            let m = ops::less_equal(&j, at)?;
            return Ok(AttentionMask::Array(ops::reshape(&m, &[1, cap as i64])?));
        }
        match self {
            KvCache::Rotating(c) => c.mask(l, window),
            _ => plain_mask(l, self.offset(), window),
        }
    }

    /// Whether [`KvCache::trim`] can drop positions (a rotating cache only before it wraps).
    pub fn is_trimmable(&self) -> bool {
        match self {
            KvCache::Rotating(c) => c.offset < c.max_size,
            _ => true,
        }
    }

    /// Forgets the last `n` positions; returns how many were dropped (0 when not trimmable).
    pub fn trim(&mut self, n: usize) -> usize {
        if !self.is_trimmable() {
            return 0;
        }
        let n = n.min(self.offset());
        match self {
            KvCache::Standard(c) => c.offset -= n,
            KvCache::Quantized(c) => c.offset -= n,
            KvCache::Rotating(c) => {
                c.offset -= n;
                c.idx -= n.min(c.idx);
            }
        }
        n
    }

    /// Bytes held by the cache buffers.
    pub fn nbytes(&self) -> usize {
        let n = |a: &Option<Array>| a.as_ref().map_or(0, |a| a.nbytes());
        let q = |a: &Option<QBuf>| {
            a.as_ref()
                .map_or(0, |a| a.0.nbytes() + a.1.nbytes() + a.2.nbytes())
        };
        match self {
            KvCache::Standard(c) => n(&c.keys) + n(&c.values),
            KvCache::Rotating(c) => n(&c.keys) + n(&c.values),
            KvCache::Quantized(c) => q(&c.keys) + q(&c.values),
        }
    }

    /// mlx-lm's class name (written into prompt cache files).
    pub fn class_name(&self) -> &'static str {
        match self {
            KvCache::Standard(_) => "KVCache",
            KvCache::Rotating(_) => "RotatingKVCache",
            KvCache::Quantized(_) => "QuantizedKVCache",
        }
    }
}

// ---- prompt cache files (mlx-lm's layout, so either side can read the other's files) ----
//
// Tensors are named `<layer>.<state index>` (quantized parts `<layer>.<k|v>.<part>`); integer
// state (offset, keep, ...) is stored as int32 scalars listed in the metadata. Metadata keys:
// `0.<user key>` = user metadata, `1.<layer>` = mlx-lm class name, `2.0` = "" and
// `2.<n>.0`/`2.<n>.1` = (tensor name, "scalar"|"none") for each non-array state entry.

/// Saves `caches` (one per layer) and string `metadata` to a safetensors file.
pub fn save_prompt_cache(
    path: &Path,
    caches: &[KvCache],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let mut tensors: Vec<(String, Array)> = Vec::new();
    let mut meta = rmlx::io::Metadata::new();
    let mut scalars: Vec<(String, &'static str)> = Vec::new();
    for (k, v) in metadata {
        meta.insert(format!("0.{k}"), v.clone());
    }
    let put_opt = |tensors: &mut Vec<(String, Array)>,
                   scalars: &mut Vec<(String, &'static str)>,
                   name: String,
                   a: Option<Array>| {
        match a {
            Some(a) => tensors.push((name, a)),
            None => {
                tensors.push((name.clone(), Array::from_vec(Vec::<f32>::new())));
                scalars.push((name, "none"));
            }
        }
    };
    for (i, c) in caches.iter().enumerate() {
        meta.insert(format!("1.{i}"), c.class_name().to_string());
        let ints: Vec<usize> = match c {
            KvCache::Standard(s) => {
                let cut =
                    |a: &Option<Array>| a.as_ref().map(|a| seq_slice(a, 0, s.offset)).transpose();
                put_opt(&mut tensors, &mut scalars, format!("{i}.0"), cut(&s.keys)?);
                put_opt(
                    &mut tensors,
                    &mut scalars,
                    format!("{i}.1"),
                    cut(&s.values)?,
                );
                vec![s.offset]
            }
            KvCache::Rotating(r) => {
                put_opt(&mut tensors, &mut scalars, format!("{i}.0"), r.keys.clone());
                put_opt(
                    &mut tensors,
                    &mut scalars,
                    format!("{i}.1"),
                    r.values.clone(),
                );
                vec![r.offset, r.keep, r.max_size, r.idx]
            }
            KvCache::Quantized(q) => {
                for (j, buf) in [&q.keys, &q.values].into_iter().enumerate() {
                    for p in 0..3 {
                        let part = buf.as_ref().map(|b| [&b.0, &b.1, &b.2][p].clone());
                        put_opt(&mut tensors, &mut scalars, format!("{i}.{j}.{p}"), part);
                    }
                }
                vec![q.offset, q.group_size, q.bits]
            }
        };
        for (j, v) in ints.into_iter().enumerate() {
            let name = format!("{i}.{}", j + 2);
            let v = i32::try_from(v)
                .map_err(|_| gen_err(format!("[save_prompt_cache] {name} = {v} exceeds int32")))?;
            tensors.push((name.clone(), Array::scalar(v)));
            scalars.push((name, "scalar"));
        }
    }
    meta.insert("2.0".into(), String::new());
    for (n, (name, kind)) in scalars.into_iter().enumerate() {
        meta.insert(format!("2.{}.0", n + 1), name);
        meta.insert(format!("2.{}.1", n + 1), kind.to_string());
    }
    let refs: Vec<(&str, &Array)> = tensors.iter().map(|(n, a)| (n.as_str(), a)).collect();
    rmlx::io::save_safetensors(path, &refs, &meta)
        .map_err(|e| LmError::Io(format!("{}: {e}", path.display())))
}

/// Loads a prompt cache written by [`save_prompt_cache`] (or mlx-lm's `save_prompt_cache`):
/// the caches, one per layer, and the user metadata.
pub fn load_prompt_cache(path: &Path) -> Result<(Vec<KvCache>, HashMap<String, String>)> {
    let bad = |msg: String| {
        LmError::Load(format!(
            "{}: not a prompt cache file: {msg}",
            path.display()
        ))
    };
    let (tensors, meta) = rmlx::io::load_safetensors(path)
        .map_err(|e| LmError::Load(format!("{}: {e}", path.display())))?;
    let mut arrays: HashMap<String, Array> = tensors.into_iter().collect();
    let mut user = HashMap::new();
    let mut classes: Vec<(usize, String)> = Vec::new();
    let mut none: Vec<String> = Vec::new();
    for (k, v) in &meta {
        if let Some(key) = k.strip_prefix("0.") {
            user.insert(key.to_string(), v.clone());
        } else if let Some(i) = k.strip_prefix("1.") {
            let i: usize = i.parse().map_err(|_| bad(format!("bad class key {k:?}")))?;
            classes.push((i, v.clone()));
        } else if let Some(n) = k.strip_prefix("2.").and_then(|r| r.strip_suffix(".1")) {
            if v == "none" {
                let name = meta
                    .get(&format!("2.{n}.0"))
                    .ok_or_else(|| bad(format!("missing 2.{n}.0")))?;
                none.push(name.clone());
            }
        }
    }
    for n in none {
        arrays.remove(&n);
    }
    classes.sort();
    let int = |name: String| -> Result<usize> {
        let a = arrays
            .get(&name)
            .ok_or_else(|| bad(format!("missing tensor {name}")))?;
        let v: i64 = a.item()?;
        usize::try_from(v).map_err(|_| bad(format!("{name} = {v} is negative")))
    };
    let mut caches = Vec::with_capacity(classes.len());
    for (pos, (i, class)) in classes.iter().enumerate() {
        if *i != pos {
            return Err(bad(format!("layer {pos} has no class entry")));
        }
        let arr = |name: String| arrays.get(&name).cloned();
        let check_kv = |k: &Option<Array>, v: &Option<Array>, len: usize| -> Result<()> {
            for a in [k, v].into_iter().flatten() {
                if a.ndim() != 4 || a.shape()[2] < len {
                    return Err(bad(format!(
                        "layer {i}: cached array {:?} cannot hold {len} positions",
                        a.shape()
                    )));
                }
            }
            Ok(())
        };
        let c = match class.as_str() {
            "KVCache" => {
                let (keys, values, offset) = (
                    arr(format!("{i}.0")),
                    arr(format!("{i}.1")),
                    int(format!("{i}.2"))?,
                );
                check_kv(&keys, &values, offset)?;
                KvCache::Standard(StandardCache {
                    keys,
                    values,
                    offset,
                    at: None,
                })
            }
            "RotatingKVCache" => {
                let (keys, values) = (arr(format!("{i}.0")), arr(format!("{i}.1")));
                let (offset, keep, max_size, idx) = (
                    int(format!("{i}.2"))?,
                    int(format!("{i}.3"))?,
                    int(format!("{i}.4"))?,
                    int(format!("{i}.5"))?,
                );
                check_kv(&keys, &values, idx)?;
                if max_size == 0 || keep >= max_size {
                    return Err(bad(format!(
                        "layer {i}: max_size {max_size} with keep {keep}"
                    )));
                }
                KvCache::Rotating(RotatingCache {
                    keys,
                    values,
                    offset,
                    max_size,
                    keep,
                    idx,
                })
            }
            "QuantizedKVCache" => {
                let q = |j: usize| -> Option<QBuf> {
                    Some((
                        arr(format!("{i}.{j}.0"))?,
                        arr(format!("{i}.{j}.1"))?,
                        arr(format!("{i}.{j}.2"))?,
                    ))
                };
                let (offset, group_size, bits) = (
                    int(format!("{i}.2"))?,
                    int(format!("{i}.3"))?,
                    int(format!("{i}.4"))?,
                );
                KvCache::quantized(bits, group_size)?; // validates bits and group size
                let (keys, values) = (q(0), q(1));
                check_kv(
                    &keys.as_ref().map(|b| b.0.clone()),
                    &values.as_ref().map(|b| b.0.clone()),
                    offset,
                )?;
                KvCache::Quantized(QuantizedCache {
                    keys,
                    values,
                    offset,
                    bits,
                    group_size,
                    at: None,
                })
            }
            other => return Err(bad(format!("layer {i}: unsupported cache class {other:?}"))),
        };
        caches.push(c);
    }
    Ok((caches, user))
}
