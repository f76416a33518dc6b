//! Mechanics every decoder shares: attention over `fast::scaled_dot_product_attention` with the
//! cache's mask, the gated MLP, and the mask choice when no cache is passed.

use crate::cache::{causal_mask, AttentionMask, Fetched, KvCache};
use crate::config::ModelConfig;
use crate::error::{LmError, Result};
use crate::models::quantized_attention::quantized_sdpa;
use rmlx::{fast, ops, Array, Dtype};
use rmlx_nn::{Embedding, GateUpSwiglu, Linear, Normed, Parallel, RmsNorm, Rope, Weights};

/// The nonlinearity of a gated MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `silu(gate) * up` (Llama, Qwen).
    Silu,
    /// `gelu_approx(gate) * up` (Gemma).
    GeluApprox,
}

/// Multi-head attention with grouped KV heads, optional q/k RMS norms (Qwen3, Gemma 3).
#[derive(Clone, Debug)]
pub struct Attention {
    /// q, k and v projections (fused into one on a GPU).
    pub qkv: Parallel,
    pub o_proj: Linear,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub rope: Rope,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// With a fused q/k/v projection: the q and k norms' weights as one `[H + Hkv, D]` array
    /// (a row per head), so that one norm and one RoPE serve the query and key heads together.
    pub qk_norm_rows: Option<Array>,
}

/// How to build one attention layer from a config.
pub struct AttentionSpec {
    /// Bias on q/k/v (Qwen2), o_proj follows `o_bias`.
    pub qkv_bias: bool,
    pub o_bias: bool,
    /// `q_norm`/`k_norm` present; `plus_one` = Gemma's `(1 + w)` form.
    pub qk_norm: bool,
    pub plus_one: bool,
    pub rope: Rope,
    pub scale: f32,
}

impl Attention {
    /// Takes `{prefix}.{q,k,v,o}_proj` (and norms) from `w`.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        c: &ModelConfig,
        spec: AttentionSpec,
    ) -> Result<Attention> {
        let (h, kv, d, dim) = (
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
            c.hidden_size,
        );
        let norm = |w: &mut Weights, name: &str| -> Result<Option<RmsNorm>> {
            if !spec.qk_norm {
                return Ok(None);
            }
            let p = format!("{prefix}.{name}");
            Ok(Some(if spec.plus_one {
                w.rms_norm_plus_one(&p, d, c.rms_norm_eps)?
            } else {
                w.rms_norm(&p, d, c.rms_norm_eps)?
            }))
        };
        let qkv = vec![
            w.linear(&format!("{prefix}.q_proj"), dim, h * d, spec.qkv_bias)?,
            w.linear(&format!("{prefix}.k_proj"), dim, kv * d, spec.qkv_bias)?,
            w.linear(&format!("{prefix}.v_proj"), dim, kv * d, spec.qkv_bias)?,
        ];
        let qkv = Parallel::auto(qkv)?;
        let (q_norm, k_norm) = (norm(w, "q_norm")?, norm(w, "k_norm")?);
        let qk_norm_rows = match (&q_norm, &k_norm, qkv.fused()) {
            (Some(qn), Some(kn), Some(_)) if qn.eps == kn.eps => {
                let rows = |nm: &RmsNorm, n: usize| -> Result<Array> {
                    Ok(ops::broadcast_to(
                        &ops::reshape(&nm.weight, &[1, d as i64])?,
                        &[n, d],
                    )?)
                };
                let r = ops::concatenate(&[rows(qn, h)?, rows(kn, kv)?], 0)?;
                r.eval()?;
                Some(r)
            }
            _ => None,
        };
        Ok(Attention {
            qkv,
            o_proj: w.linear(&format!("{prefix}.o_proj"), h * d, dim, spec.o_bias)?,
            q_norm,
            k_norm,
            rope: spec.rope,
            n_heads: h,
            n_kv_heads: kv,
            head_dim: d,
            scale: spec.scale,
            qk_norm_rows,
        })
    }

    /// Whether the query and key heads go through one norm and one RoPE: a fused projection
    /// whose q and k heads are adjacent, with both norms or neither.
    /// `RMLX_JOINT_QK=0` keeps them apart (an ablation switch).
    fn joint_qk(&self) -> bool {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        // qk_norm_rows exists exactly where both norms can act as one
        let norms_joint =
            self.qk_norm_rows.is_some() || (self.q_norm.is_none() && self.k_norm.is_none());
        self.qkv.fused().is_some()
            && norms_joint
            && rmlx_nn::switches::enabled(&ON, "RMLX_JOINT_QK")
    }

    /// [`Attention::project`] and RoPE for a fused projection: the q and k heads of the
    /// product `[B, L, (H + 2 Hkv) D]` normalised (each head by its own weight row) and
    /// rotated as one `[B, H + Hkv, L, D]` array, then split. Two kernels where the parts
    /// take four (six with q/k norms).
    fn project_rotated(&self, x: Normed, cache: Option<&KvCache>) -> Result<(Array, Array, Array)> {
        let (b, l) = (x.x.shape()[0] as i64, x.x.shape()[1] as i64);
        let (h, kv, d) = (
            self.n_heads as i64,
            self.n_kv_heads as i64,
            self.head_dim as i64,
        );
        let layer = self.qkv.fused().expect("joint_qk checked the fusion");
        let y = ops::reshape(&layer.forward_normed(x)?, &[b, l, h + 2 * kv, d])?;
        let heads = |a: i64, z: i64| ops::slice(&y, &[0, 0, a, 0], &[b, l, z, d], &[1, 1, 1, 1]);
        let (qk, v) = (heads(0, h + kv)?, heads(h + kv, h + 2 * kv)?);
        let qk = ops::transpose(&qk, Some(&[0, 2, 1, 3]))?;
        // with q/k norms: each head normalised by its weight row as it is rotated (one kernel
        // on a GPU, `fast::rms_norm_rope`)
        let qk = match (&self.qk_norm_rows, &self.q_norm) {
            (Some(w), Some(nm)) => {
                self.rope
                    .forward_normed_at(&qk, (w, nm.eps), &rope_offset(cache)?)?
            }
            _ => self.rotate(&qk, cache)?,
        };
        let part = |a: i64, z: i64| ops::slice(&qk, &[0, a, 0, 0], &[b, z, l, d], &[1, 1, 1, 1]);
        Ok((
            part(0, h)?,
            part(h, h + kv)?,
            ops::transpose(&v, Some(&[0, 2, 1, 3]))?,
        ))
    }

    /// RoPE at the cache's offset (or its device-held position during graph replay).
    fn rotate(&self, x: &Array, cache: Option<&KvCache>) -> Result<Array> {
        Ok(self.rope.forward_at(x, &rope_offset(cache)?)?)
    }

    /// `x: [B, L, dim]` (its pre-norm still to apply, where given) → `[B, L, dim]`, plus
    /// `residual` where given (added by the output projection); the cache (if any) receives
    /// this step's keys/values.
    pub fn forward(
        &self,
        x: Normed,
        mask: &AttentionMask,
        mut cache: Option<&mut KvCache>,
        residual: Option<&Array>,
    ) -> Result<Array> {
        if let Some(c) = cache.as_deref_mut() {
            // a standard cache writing at a device-held position masks by that position
            // (`KvCache::mask`): the fused op's attention over positions 0..=pos is the same
            let fused = (fused_attention(self.head_dim) && matches!(mask, AttentionMask::Array(_)))
                .then_some(self.scale);
            if let Some((q, kv)) = self.project_written(x, None, &mut [c], fused)? {
                if fused.is_some() {
                    return self.output(&q, residual);
                }
                let (k, v) = &kv[0];
                let o = self.sdpa(&q, k, v, mask)?;
                return self.output(&o, residual);
            }
        }
        let (q, k, v) = if self.joint_qk() {
            self.project_rotated(x, cache.as_deref())?
        } else {
            let (q, k, v) = self.project(x)?;
            let c = cache.as_deref();
            (self.rotate(&q, c)?, self.rotate(&k, c)?, v)
        };
        let o = self.attend(&q, &k, &v, mask, cache)?;
        self.output(&o, residual)
    }

    /// A ragged decode step: row `b` of `x: [B, 1, dim]` (pre-norm still to apply, where given)
    /// is the next token of sequence `b`, which has its own cache `caches[b]` (any length) and
    /// mask `step.masks[b]`. The projections see all B rows at once (one matmul per weight);
    /// RoPE, the cache write and attention run per sequence, exactly as a batch of one would
    /// run them (or, on a GPU, as one op for all rows: [`Attention::attend_rows`]). A single
    /// row is a batch of one: [`Attention::forward`], with its fused q/k norm and RoPE.
    pub fn forward_rows(
        &self,
        x: Normed,
        step: &RowsStep,
        caches: &mut [&mut KvCache],
        residual: Option<&Array>,
    ) -> Result<Array> {
        let masks = &step.masks;
        let b = x.x.shape()[0];
        if x.x.ndim() != 3 || x.x.shape()[1] != 1 || masks.len() != b || caches.len() != b {
            return Err(LmError::Generate(format!(
                "[forward_rows] x must be [B, 1, dim] with one mask and one cache per row, got {:?}, {} masks, {} caches",
                x.x.shape(),
                masks.len(),
                caches.len()
            )));
        }
        if let ([mask], [cache]) = (&masks[..], &mut *caches) {
            return self.forward(x, mask, Some(&mut **cache), residual);
        }
        if rows_attend_together(masks, caches, x.x.dtype()) {
            let pos = step.positions()?;
            let fused = fused_attention(self.head_dim).then_some(self.scale);
            if let Some((q, kv)) = self.project_written(x, Some(pos), caches, fused)? {
                if fused.is_some() {
                    return self.output(&q, residual);
                }
                let (ks, vs): (Vec<Array>, Vec<Array>) = kv.into_iter().unzip();
                return self.output_rows(&q, &ks, &vs, pos, residual);
            }
        }
        let (q, k, v) = self.project(x)?;
        if rows_attend_together(masks, caches, q.dtype()) {
            return self.attend_rows(&q, &k, &v, step.positions()?, caches, residual);
        }
        let row = batch_row;
        let mut outs = Vec::with_capacity(b);
        for (i, (mask, cache)) in masks.iter().zip(caches.iter_mut()).enumerate() {
            let c = Some(&**cache);
            let (qi, ki) = (self.rotate(&row(&q, i)?, c)?, self.rotate(&row(&k, i)?, c)?);
            let o = self.attend(&qi, &ki, &row(&v, i)?, mask, Some(&mut **cache))?;
            outs.push(o);
        }
        self.output(&ops::concatenate(&outs, 0)?, residual)
    }

    /// The batched form of [`Attention::forward_rows`]' per-sequence part: one RoPE for all
    /// rows' q and one for their k (each row at its own position), the cache writes, then one
    /// attention op for all rows, each over its own cache (`fast::sdpa_rows`). q `[B, H, 1, D]`,
    /// k and v `[B, Hkv, 1, D]` from the projection; `pos` the rows' positions `[B]`.
    fn attend_rows(
        &self,
        q: &Array,
        k: &Array,
        v: &Array,
        pos: &Array,
        caches: &mut [&mut KvCache],
        residual: Option<&Array>,
    ) -> Result<Array> {
        let (q, k) = (self.rope.forward_at(q, pos)?, self.rope.forward_at(k, pos)?);
        let row = batch_row;
        let (mut ks, mut vs) = (
            Vec::with_capacity(caches.len()),
            Vec::with_capacity(caches.len()),
        );
        for (i, cache) in caches.iter_mut().enumerate() {
            let (kb, vb) = cache.update_and_fetch(&row(&k, i)?, &row(v, i)?)?;
            ks.push(kb);
            vs.push(vb);
        }
        self.output_rows(&q, &ks, &vs, pos, residual)
    }

    /// Row b's attention over the first `pos[b] + 1` keys of its own buffers (after this step's
    /// write), then the output projection.
    fn output_rows(
        &self,
        q: &Array,
        ks: &[Array],
        vs: &[Array],
        pos: &Array,
        residual: Option<&Array>,
    ) -> Result<Array> {
        let lens = ops::add(pos, &Array::scalar(1i32))?;
        let o = fast::sdpa_rows(q, ks, vs, &lens, self.scale)?;
        self.output(&o, residual)
    }

    /// A decode step's projection, RoPE and cache writes as `fast::rope_kv_write` (one kernel
    /// for the RoPE and all writes on a GPU, where the composition takes a RoPE and two writes
    /// per cache): q `[B, H, 1, D]` and each cache's whole buffers after its write. Row b
    /// rotates and writes at `pos[b]`, or without `pos` (the single path's one cache) at the
    /// cache's own device-held position. `None` where it does not apply: more than one token per row, no
    /// fused projection with joint q/k norms (or none), a rotation with an input scale, or a
    /// cache that is not a standard one writing at a device-held position with room (graph
    /// replay). `RMLX_ROPE_KV=0` turns it off (an ablation switch).
    ///
    /// With `attend` (the attention scale) the attention runs in the same op
    /// (`fast::rope_kv_sdpa`, row b over positions `0..=pos[b]` of its cache) and the first
    /// array returned is its output `[B, H, 1, D]` instead of q (see [`fused_attention`]).
    fn project_written(
        &self,
        x: Normed,
        pos: Option<&Array>,
        caches: &mut [&mut KvCache],
        attend: Option<f32>,
    ) -> Result<Option<Written>> {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if !rmlx_nn::switches::enabled(&ON, "RMLX_ROPE_KV")
            || !self.joint_qk()
            || x.x.ndim() != 3
            || x.x.shape()[1] != 1
            || caches.is_empty()
        {
            return Ok(None);
        }
        let norm = match (&self.qk_norm_rows, &self.q_norm) {
            (Some(w), Some(nm)) => Some((w, nm.eps)),
            _ => None,
        };
        let Some(spec) = self.rope.fused_spec(norm.is_some()) else {
            return Ok(None);
        };
        let (b, h, kv, d) = (
            x.x.shape()[0] as i64,
            self.n_heads,
            self.n_kv_heads,
            self.head_dim,
        );
        let layer = self.qkv.fused().expect("joint_qk checked the fusion");
        let y = ops::reshape(
            &layer.forward_normed(x)?,
            &[b, 1, (h + 2 * kv) as i64, d as i64],
        )?;
        let mut pairs = Vec::with_capacity(caches.len());
        let mut own_pos = None;
        for c in caches.iter() {
            let Some((kb, vb, at)) = c.write_target(kv, d, y.dtype()) else {
                return Ok(None);
            };
            pairs.push((kb, vb));
            own_pos.get_or_insert(at);
        }
        // every cache has a position (`write_target`), and `caches` is not empty
        let pos = pos.cloned().or(own_pos).expect("a position");
        let (q, written) = match attend {
            Some(scale) => fast::rope_kv_sdpa(&y, h, norm, spec, &pos, &pairs, scale)?,
            None => fast::rope_kv_write(&y, h, norm, spec, &pos, &pairs)?,
        };
        // the old buffers must be held by the op alone when it runs (written in place)
        drop(pairs);
        let mut out = Vec::with_capacity(written.len());
        for (c, (kb, vb)) in caches.iter_mut().zip(written) {
            out.push(c.commit_written(kb, vb)?);
        }
        Ok(Some((q, out)))
    }

    /// `x: [B, L, dim]` → q `[B, H, L, D]`, k and v `[B, Hkv, L, D]` (norms applied, no RoPE).
    fn project(&self, x: Normed) -> Result<(Array, Array, Array)> {
        let (b, l) = (x.x.shape()[0] as i64, x.x.shape()[1] as i64);
        // [B, L, H*D] → [B, L, H, D]; norms act on D, then → [B, H, L, D].
        let heads = |y: Array, n: usize, norm: &Option<RmsNorm>| -> Result<Array> {
            let y = ops::reshape(&y, &[b, l, n as i64, self.head_dim as i64])?;
            let y = match norm {
                Some(nm) => nm.forward(&y)?,
                None => y,
            };
            Ok(ops::transpose(&y, Some(&[0, 2, 1, 3]))?)
        };
        let [q, k, v]: [Array; 3] = self.qkv.forward_normed(x)?.try_into().map_err(|_| {
            LmError::Generate("attention: the q/k/v projection gave the wrong parts".into())
        })?;
        Ok((
            heads(q, self.n_heads, &self.q_norm)?,
            heads(k, self.n_kv_heads, &self.k_norm)?,
            heads(v, self.n_kv_heads, &None)?,
        ))
    }

    /// The cache update and attention of rotated q and k: → o `[B, H, L, D]`.
    fn attend(
        &self,
        q: &Array,
        k: &Array,
        v: &Array,
        mask: &AttentionMask,
        cache: Option<&mut KvCache>,
    ) -> Result<Array> {
        let fetched = match cache {
            Some(c) => {
                let t = c.storage_dtype(k.dtype());
                let (k, v) = (ops::astype(k, t), ops::astype(v, t));
                if quantized_decode_kernel(c, q, mask) {
                    let Fetched::Packed(kv) = c.update_and_fetch_packed(&k, &v)? else {
                        unreachable!("a quantized cache gives its packed rows")
                    };
                    let len = c.attended_len()?;
                    let (gs, bits) = (kv.group_size, kv.bits);
                    return Ok(fast::quantized_sdpa_decode(
                        q, &kv.keys, &kv.values, &len, self.scale, gs, bits,
                    )?);
                }
                if crate::models::quantized_attention::in_place() {
                    c.update_and_fetch_packed(&k, &v)?
                } else {
                    let (k, v) = c.update_and_fetch(&k, &v)?;
                    Fetched::Dense(k, v)
                }
            }
            None => Fetched::Dense(k.clone(), v.clone()),
        };
        match fetched {
            Fetched::Dense(k, v) => self.sdpa(q, &k, &v, mask),
            // a quantized cache is read as it is stored
            Fetched::Packed(kv) => quantized_sdpa(q, &kv, self.scale, mask),
        }
    }

    /// Attention of q over the keys and values `k`, `v` (the cache's, after the write).
    fn sdpa(&self, q: &Array, k: &Array, v: &Array, mask: &AttentionMask) -> Result<Array> {
        let m = match mask {
            AttentionMask::None => fast::Mask::None,
            AttentionMask::Causal => fast::Mask::Causal,
            AttentionMask::Array(a) => fast::Mask::Array(a),
        };
        Ok(fast::scaled_dot_product_attention(q, k, v, self.scale, m)?)
    }

    /// o `[B, H, L, D]` → `[B, L, dim]` through `o_proj`, plus `residual` where given.
    fn output(&self, o: &Array, residual: Option<&Array>) -> Result<Array> {
        let (b, l) = (o.shape()[0] as i64, o.shape()[2] as i64);
        let o = ops::reshape(&ops::transpose(o, Some(&[0, 2, 1, 3]))?, &[b, l, -1])?;
        Ok(match residual {
            Some(r) => self.o_proj.forward_add(&o, r)?,
            None => self.o_proj.forward(&o)?,
        })
    }
}

/// What [`Attention::project_written`] gives: q `[B, H, 1, D]` and each cache's whole key and
/// value buffers after the write.
type Written = (Array, Vec<(Array, Array)>);

/// Row `i` of `a: [B, ...4-D]`, kept 4-D.
fn batch_row(a: &Array, i: usize) -> Result<Array> {
    let i = i as i64;
    Ok(ops::slice(
        a,
        &[i, 0, 0, 0],
        &[i + 1, i64::MAX, i64::MAX, i64::MAX],
        &[1, 1, 1, 1],
    )?)
}

/// Whether a ragged decode step's sequences attend in one op ([`Attention::attend_rows`]): on a
/// GPU, where every cache is a standard one holding keys of the activations' dtype `t` and
/// each mask is the cache's own (none, or the position mask of a recorded step: no sliding
/// window). Elsewhere each sequence attends by itself, as a batch of one would (the CPU's
/// batch invariance is bitwise). `RMLX_ROWS_ATTN=0` keeps the per-sequence path on a GPU (an
/// ablation switch).
fn rows_attend_together(masks: &[AttentionMask], caches: &[&mut KvCache], t: rmlx::Dtype) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    rmlx::current_device().kind == rmlx::DeviceType::Gpu
        && rmlx_nn::switches::enabled(&ON, "RMLX_ROWS_ATTN")
        && caches.iter().zip(masks).all(|(c, m)| {
            matches!(c, KvCache::Standard(_))
                && !c.is_empty()
                && c.storage_dtype(t) == t
                && (matches!(m, AttentionMask::None) || c.position_array().is_some())
        })
}

/// Whether a decode step (one query per head) on a quantized cache attends over its packed rows
/// in place by one kernel (`fast::quantized_sdpa_decode`): on a GPU, where the mask is none or
/// the cache's own position mask (every standard or quantized cache's, no sliding window), so
/// that the cache's length says everything. Else the cache is dequantized for the dense
/// attention (or read in place by the composition of `quantized_attention.rs` where asked).
/// Measured on an H200 (docs/PERF.md, calls C4–C5, `rmlx bench --kv-bits 8`, generation
/// against the dequantizing path in the same call): the 8B at 8,192 keys 1.16–1.37×, at 2,048
/// 0.95–1.08×, SmolLM2 0.99–1.02×, Qwen3-30B-A3B at 2,048 0.89–1.00×. `RMLX_QUANTIZED_SDPA=0`
/// keeps the dequantizing path on a GPU (an ablation switch).
fn quantized_decode_kernel(c: &KvCache, q: &Array, mask: &AttentionMask) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    matches!(c, KvCache::Quantized(_))
        && q.ndim() == 4
        && q.shape()[2] == 1
        && (matches!(mask, AttentionMask::None) || c.position_array().is_some())
        && rmlx::current_device().kind == rmlx::DeviceType::Gpu
        && rmlx_nn::switches::enabled(&ON, "RMLX_QUANTIZED_SDPA")
}

/// Whether a decode step that writes its own cache attends in the same op
/// (`fast::rope_kv_sdpa`; one kernel on a GPU where RoPE and cache write, then attention, take
/// two): for heads of at least 128 features. Measured on an H100 (docs/PERF.md, call X7):
/// Llama-3.1-8B 1.02x at 192 and at 8,256 keys, its batch engine at 8 rows 1.03x, Qwen3-30B-A3B
/// 1.01x; SmolLM2 (D = 64) 0.93x, its fused kernel slower than the two it replaces (13.2 µs
/// against 3.4 + 8.6 in Nsight Compute). `RMLX_ROPE_KV_SDPA=0` keeps the attention a separate
/// op everywhere, `=1` fuses it at any head size (ablation switches).
fn fused_attention(head_dim: usize) -> bool {
    static MODE: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let forced = MODE.get_or_init(|| match std::env::var("RMLX_ROPE_KV_SDPA") {
        Ok(v) if v == "0" => Some(false),
        Ok(v) if v == "1" => Some(true),
        _ => None,
    });
    forced.unwrap_or(head_dim >= 128)
}

/// The position RoPE starts at: the cache's device-held position during graph replay, else its
/// offset (0 without a cache).
fn rope_offset(cache: Option<&KvCache>) -> Result<Array> {
    if let Some(at) = cache.and_then(|c| c.position_array()) {
        return Ok(at.clone());
    }
    let o = cache.map_or(0, |c| c.offset());
    let o = i32::try_from(o)
        .map_err(|_| LmError::Generate(format!("rope offset {o} does not fit in i32")))?;
    Ok(Array::scalar(o))
}

/// `down_proj(act(gate_proj(x)) * up_proj(x))`.
#[derive(Clone, Debug)]
pub struct Mlp {
    /// gate and up projections (fused into one on a GPU).
    pub gate_up: Parallel,
    pub down_proj: Linear,
    pub act: Activation,
    /// SiLU MLPs with a fused quantized gate/up: the product and SwiGLU as one op for decode.
    pub swiglu: Option<GateUpSwiglu>,
}

impl Mlp {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        c: &ModelConfig,
        bias: bool,
        act: Activation,
    ) -> Result<Mlp> {
        let (d, h) = (c.hidden_size, c.intermediate_size);
        let gate_up = vec![
            w.linear(&format!("{prefix}.gate_proj"), d, h, bias)?,
            w.linear(&format!("{prefix}.up_proj"), d, h, bias)?,
        ];
        let gate_up = Parallel::auto(gate_up)?;
        let swiglu = match act {
            Activation::Silu => GateUpSwiglu::new(&gate_up)?,
            Activation::GeluApprox => None,
        };
        Ok(Mlp {
            gate_up,
            down_proj: w.linear(&format!("{prefix}.down_proj"), h, d, bias)?,
            act,
            swiglu,
        })
    }

    /// `x: [B, L, dim]` (its pre-norm still to apply, where given) → `[B, L, dim]`, plus
    /// `residual` where given (added by `down_proj`).
    pub fn forward(&self, x: Normed, residual: Option<&Array>) -> Result<Array> {
        let fused = match &self.swiglu {
            Some(s) => s.forward(x)?,
            None => None,
        };
        let h = match fused {
            Some(h) => h,
            None => self.hidden(x)?,
        };
        Ok(match residual {
            Some(r) => self.down_proj.forward_add(&h, r)?,
            None => self.down_proj.forward(&h)?,
        })
    }

    /// `act(gate(x)) * up(x)` as the product, then one element-wise pass.
    fn hidden(&self, x: Normed) -> Result<Array> {
        let [g, u]: [Array; 2] = self.gate_up.forward_normed(x)?.try_into().map_err(|_| {
            LmError::Generate("mlp: the gate/up projection gave the wrong parts".into())
        })?;
        Ok(match self.act {
            // one element-wise pass (two kernels on a GPU composed)
            Activation::Silu => ops::silu_mul(&g, &u)?,
            Activation::GeluApprox => ops::multiply(&ops::gelu_approx(&g), &u)?,
        })
    }
}

/// The dtype activations run in for norms of dtype `norm`: the norms' own (as in mlx-lm, where
/// the embedding's output dtype carries through), except 16-bit ones on the CPU, which run in
/// f32 there, as llama.cpp's CPU backend computes: the CPU's kernels are f32 ones (its 16-bit
/// element-wise loops convert element by element), and an MLX 4-bit SmolLM2 with f16 norms ran
/// at half the GGUF's prompt speed. `RMLX_CPU_F32_ACT=0` keeps the norms' dtype.
pub fn activation_dtype(norm: rmlx::Dtype) -> rmlx::Dtype {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let cpu = rmlx::current_device().kind == rmlx::DeviceType::Cpu;
    let narrow = matches!(norm, rmlx::Dtype::F16 | rmlx::Dtype::BF16);
    if cpu && narrow && rmlx_nn::switches::enabled(&ON, "RMLX_CPU_F32_ACT") {
        rmlx::Dtype::F32
    } else {
        norm
    }
}

/// The mask for `l` new tokens: the cache's when one is passed, else mlx-lm's rule without a
/// cache (none for one token, an explicit array when a window cuts in, else causal).
pub fn make_mask(
    cache: Option<&KvCache>,
    l: usize,
    window: Option<usize>,
) -> Result<AttentionMask> {
    if let Some(c) = cache {
        return c.mask(l, window);
    }
    Ok(match window {
        _ if l == 1 => AttentionMask::None,
        Some(w) if l > w => AttentionMask::Array(causal_mask(l, 0, Some(w))?),
        _ => AttentionMask::Causal,
    })
}

/// Checks `tokens` is `[B, L]` of integers with `L > 0` and the caches match the layers.
pub fn check_inputs(tokens: &Array, caches: &[KvCache], n_layers: usize) -> Result<()> {
    if tokens.ndim() != 2 || tokens.shape()[1] == 0 || tokens.dtype().is_float() {
        return Err(LmError::Generate(format!(
            "model input must be integer token ids [batch, length>0], got {:?} {}",
            tokens.shape(),
            tokens.dtype()
        )));
    }
    if !caches.is_empty() && caches.len() != n_layers {
        return Err(LmError::Generate(format!(
            "{} caches passed for {n_layers} layers",
            caches.len()
        )));
    }
    Ok(())
}

/// Checks a ragged decode step: tokens `[B, 1]` (u32), one per sequence, each sequence with
/// one cache per layer.
pub fn check_rows(tokens: &Array, caches: &[&mut [KvCache]], n_layers: usize) -> Result<()> {
    let s = tokens.shape();
    if s.len() != 2
        || s[1] != 1
        || s[0] == 0
        || s[0] != caches.len()
        || tokens.dtype() != Dtype::U32
    {
        return Err(LmError::Generate(format!(
            "[forward_rows] needs u32 tokens [B, 1] and one cache list per sequence, got {} {:?} and {} cache lists",
            tokens.dtype(),
            s,
            caches.len()
        )));
    }
    if let Some(c) = caches.iter().find(|c| c.len() != n_layers) {
        return Err(LmError::Generate(format!(
            "[forward_rows] {} caches passed for {n_layers} layers",
            c.len()
        )));
    }
    Ok(())
}

/// A pre-norm decoder layer: attention through `attn` (given the attention, the normed input
/// and the residual; shared or ragged caches), which returns the residual stream after
/// attention, then the feed-forward block, wired as the architecture wires them. The norms ride
/// on the first products and the residual adds on the output projections where they can
/// (`Linear::forward_normed`, `Linear::forward_add`).
pub trait DecoderBlock {
    /// `x: [B, L, dim]` → `[B, L, dim]`.
    fn block(
        &self,
        x: &Array,
        attn: impl FnOnce(&Attention, Normed, &Array) -> Result<Array>,
    ) -> Result<Array>;
}

/// A ragged decode step (`LanguageModel::forward_rows`) of a decoder whose layers all attend
/// globally: the embedding of `tokens: [B, 1]`, each layer with every sequence attending its
/// own caches ([`Attention::forward_rows`]), the final norm and the head → logits `[B, vocab]`.
pub fn forward_rows_layers<L: DecoderBlock>(
    (embed, layers, norm, head): (&Embedding, &[L], &RmsNorm, &Head),
    tokens: &Array,
    caches: &mut [&mut [KvCache]],
) -> Result<Array> {
    check_rows(tokens, caches, layers.len())?;
    let mut h = embed.forward_as(tokens, activation_dtype(norm.weight.dtype()))?;
    let step = RowsStep::new(caches, Some(0), None)?;
    for (i, layer) in layers.iter().enumerate() {
        let mut lc: Vec<&mut KvCache> = caches.iter_mut().map(|c| &mut c[i]).collect();
        h = layer.block(&h, |a, x, r| a.forward_rows(x, &step, &mut lc, Some(r)))?;
    }
    let h = super::llama::last_position(&h)?;
    head.forward(Normed::new(&h, norm), embed)
}

/// What the attention of every layer of a ragged decode step shares, built once per step
/// from the sequences' caches of one layer (before the update; every layer of a sequence
/// holds the same positions): each sequence's mask, and the sequences' positions (i32 `[B]`:
/// the device-held ones of a recorded step, else the offsets), which the batched path
/// ([`Attention::attend_rows`]) rotates and attends at. The positions are made on first use:
/// the per-sequence path never needs them.
pub struct RowsStep {
    pub masks: Vec<AttentionMask>,
    at: Vec<Option<Array>>,
    offsets: Vec<usize>,
    pos: std::cell::OnceCell<Array>,
}

impl RowsStep {
    /// For the caches of layer `layer` (`None`: no caches, no masks) with the layer's sliding
    /// `window`, if any.
    pub fn new(
        caches: &[&mut [KvCache]],
        layer: Option<usize>,
        window: Option<usize>,
    ) -> Result<RowsStep> {
        fn of(c: &[KvCache], layer: Option<usize>) -> Option<&KvCache> {
            layer.and_then(|i| c.get(i))
        }
        Ok(RowsStep {
            masks: caches
                .iter()
                .map(|c| match of(c, layer) {
                    Some(k) => make_mask(Some(k), 1, window),
                    None => Ok(AttentionMask::None),
                })
                .collect::<Result<_>>()?,
            at: caches
                .iter()
                .map(|c| of(c, layer).and_then(|k| k.position_array().cloned()))
                .collect(),
            offsets: caches
                .iter()
                .map(|c| of(c, layer).map_or(0, KvCache::offset))
                .collect(),
            pos: std::cell::OnceCell::new(),
        })
    }

    /// The rows' positions, i32 `[B]`.
    fn positions(&self) -> Result<&Array> {
        if let Some(p) = self.pos.get() {
            return Ok(p);
        }
        let p = match self.at.iter().cloned().collect::<Option<Vec<Array>>>() {
            Some(at) => ops::concatenate(&at, 0)?,
            None => {
                let o: Vec<i32> = self
                    .offsets
                    .iter()
                    .map(|&o| i32::try_from(o))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| LmError::Generate("a cache offset does not fit in i32".into()))?;
                Array::from_slice(&o, &[o.len()])?
            }
        };
        Ok(self.pos.get_or_init(|| p))
    }
}

/// The output head: an untied `lm_head` or the embedding table used as a linear layer.
#[derive(Clone, Debug)]
pub enum Head {
    Untied(Linear),
    Tied,
}

impl Head {
    /// `lm_head` when the checkpoint has it (or the config says untied), else tied.
    pub fn load(w: &mut Weights, c: &ModelConfig) -> Result<Head> {
        if w.contains("lm_head.weight") || !c.tie_word_embeddings {
            Ok(Head::Untied(w.linear(
                "lm_head",
                c.hidden_size,
                c.vocab_size,
                false,
            )?))
        } else {
            Ok(Head::Tied)
        }
    }

    /// `h: [B, L, dim]` (its final norm still to apply, where given) → logits `[B, L, vocab]`.
    pub fn forward(&self, h: Normed, embed: &rmlx_nn::Embedding) -> Result<Array> {
        Ok(match self {
            Head::Untied(l) => l.forward_normed(h)?,
            Head::Tied => embed.as_linear_normed(h)?,
        })
    }
}
