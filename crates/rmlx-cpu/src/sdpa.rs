//! Scaled dot-product attention, flash style: one pass over the keys with an online softmax,
//! so memory is O(rows x Dv) per task whatever the key length.
//!
//! Shapes: q `[B, Hq, L, D]`, k `[B, Hkv, S, D]`, v `[B, Hkv, S, Dv]`, mask broadcast to
//! `[B, Hq, L, S]`, out `[B, Hq, L, Dv]`. A task is (batch, kv head, block of queries, key
//! split): it holds the queries of *all* `Hq / Hkv` heads that share the kv head, so each K/V
//! row is read once per group (decode streams the cache once per kv head). When there are too
//! few tasks for the threads (decode: L = 1) the keys are split and the partial softmax states
//! merged afterwards (split-K). Scores and the softmax are f32 whatever the input dtype.
//!
//! Masks follow MLX's composition (`mlx/fast.cpp`): a bool mask replaces masked scores with
//! the lowest f32 (a fully masked row averages V uniformly, as in MLX), an additive mask is
//! added (a row of only `-inf` gives NaN, as in MLX), and the causal mask is aligned to the end
//! of the keys (query `i` sees keys `j <= i + S - L`; rows with none behave as bool-masked).

mod simd;
mod tile;

use crate::copy::{copy, out_slice_mut};
use rmlx_core::dtype::{Bool8, Element};
use rmlx_core::fast::SdpaDims;
use rmlx_core::ops::quantized::DECODE_MAX_ROWS;
use rmlx_core::primitive::{OutputSpec, SdpaMask};
use rmlx_core::{bf16, f16, ArrayData, Dtype, Error, Result};
use simd::{axpy, dot, KvElem};
use std::borrow::Cow;

/// Keys per block: scores for one block live in a `[rows, KB]` scratch.
const KB: usize = 128;
/// Query rows (all heads of a group together) per task.
const ROWS: usize = 32;
/// Smallest key range worth a split of its own.
const MIN_SPLIT: usize = 256;

/// A 4-D strided layout: element `[a, b, c, d]` at `off + a*s0 + b*s1 + c*s2 + d*s3`.
#[derive(Clone, Copy)]
struct Lay {
    off: isize,
    s: [isize; 4],
}

impl Lay {
    fn of(x: &ArrayData) -> Lay {
        Lay {
            off: x.offset as isize,
            s: [x.strides[0], x.strides[1], x.strides[2], x.strides[3]],
        }
    }
    #[inline]
    fn at(&self, a: usize, b: usize, c: usize) -> usize {
        (self.off + a as isize * self.s[0] + b as isize * self.s[1] + c as isize * self.s[2])
            as usize
    }
}

/// `x` with a unit stride on its last axis (copied when it has another one).
fn unit_last(x: &ArrayData) -> Result<Cow<'_, ArrayData>> {
    let last = x.shape.len() - 1;
    if x.strides[last] == 1 || x.shape[last] <= 1 {
        Ok(Cow::Borrowed(x))
    } else {
        Ok(Cow::Owned(copy(x)?))
    }
}

/// Where mask values come from.
enum MaskSrc<'a> {
    None,
    Causal,
    Bool(&'a [Bool8], Lay),
    F32(&'a [f32], Lay),
    F16(&'a [f16], Lay),
    BF16(&'a [bf16], Lay),
}

fn add_row<M: Element>(
    data: &[M],
    lay: &Lay,
    idx: (usize, usize, usize),
    j0: usize,
    s: &mut [f32],
) {
    let base = lay.at(idx.0, idx.1, idx.2) as isize + j0 as isize * lay.s[3];
    for (j, v) in s.iter_mut().enumerate() {
        *v += data[(base + j as isize * lay.s[3]) as usize].to_f32();
    }
}

impl MaskSrc<'_> {
    /// Applies the array mask of row `(b, h, i)` to scores of keys `j0..j0 + s.len()`.
    #[inline]
    fn apply(&self, b: usize, h: usize, i: usize, j0: usize, s: &mut [f32]) {
        match self {
            MaskSrc::None | MaskSrc::Causal => {}
            MaskSrc::Bool(d, lay) => {
                let base = lay.at(b, h, i) as isize + j0 as isize * lay.s[3];
                for (j, v) in s.iter_mut().enumerate() {
                    if d[(base + j as isize * lay.s[3]) as usize].0 == 0 {
                        *v = f32::MIN;
                    }
                }
            }
            MaskSrc::F32(d, lay) => add_row(d, lay, (b, h, i), j0, s),
            MaskSrc::F16(d, lay) => add_row(d, lay, (b, h, i), j0, s),
            MaskSrc::BF16(d, lay) => add_row(d, lay, (b, h, i), j0, s),
        }
    }
}

/// Problem sizes and the work split, shared by every task.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    hq: usize,
    hkv: usize,
    l: usize,
    s: usize,
    d: usize,
    dv: usize,
    /// Query heads per kv head.
    g: usize,
    /// Queries per task (per head).
    lb: usize,
    n_qblk: usize,
    n_split: usize,
    split_len: usize,
}

/// The running softmax state of a task's rows: max, sum of weights, weighted sum of V rows.
struct Partial {
    m: Vec<f32>,
    l: Vec<f32>,
    acc: Vec<f32>,
}

/// `[q, k, v, mask?]` → attention output `[B, Hq, L, Dv]` in q's dtype (k and v in q's dtype,
/// or f16/bf16 under f32 queries).
pub fn sdpa(x: &[ArrayData], scale: f32, mask: SdpaMask, out: &OutputSpec) -> Result<ArrayData> {
    sdpa_split(x, scale, mask, out, None)
}

/// [`sdpa`] with the number of key splits forced (tests cover split-K on any thread count).
fn sdpa_split(
    x: &[ArrayData],
    scale: f32,
    mask: SdpaMask,
    out: &OutputSpec,
    force_split: Option<usize>,
) -> Result<ArrayData> {
    let bad = |m: String| Error::runtime("cpu", format!("[scaled_dot_product_attention] {m}"));
    let SdpaDims {
        b,
        hq,
        l,
        d,
        hkv,
        s,
        dv,
    } = SdpaDims::of("cpu", x, mask)?;
    let (q, k, v) = (unit_last(&x[0])?, unit_last(&x[1])?, unit_last(&x[2])?);
    let msrc = match mask {
        SdpaMask::None => MaskSrc::None,
        SdpaMask::Causal => MaskSrc::Causal,
        SdpaMask::Array => {
            let m = &x[3];
            let lay = Lay::of(m);
            match m.dtype {
                Dtype::Bool => MaskSrc::Bool(m.buffer_as::<Bool8>(), lay),
                Dtype::F32 => MaskSrc::F32(m.buffer_as::<f32>(), lay),
                Dtype::F16 => MaskSrc::F16(m.buffer_as::<f16>(), lay),
                Dtype::BF16 => MaskSrc::BF16(m.buffer_as::<bf16>(), lay),
                t => return Err(bad(format!("unsupported mask type {t}"))),
            }
        }
    };
    let mut o = ArrayData::alloc(out.shape, out.dtype)?;
    if o.numel() == 0 {
        return Ok(o);
    }
    let g = hq / hkv;
    let lb = (ROWS / g).clamp(1, l.max(1));
    let n_qblk = l.div_ceil(lb);
    let tasks = b * hkv * n_qblk;
    let threads = rayon::current_num_threads();
    // Split the keys when the other axes leave threads idle (decode), keeping splits long.
    let n_split = if tasks >= 2 * threads {
        1
    } else {
        (2 * threads).div_ceil(tasks).min(s / MIN_SPLIT).max(1)
    };
    let n_split = force_split.unwrap_or(n_split).clamp(1, s.max(1));
    let split_len = s.div_ceil(n_split).max(1);
    let dims = Dims {
        b,
        hq,
        hkv,
        l,
        s,
        d,
        dv,
        g,
        lb,
        n_qblk,
        n_split,
        split_len,
    };
    // K and V share a dtype (`SdpaDims::of` checked); q (and the output) is that dtype or f32
    // (an f16 KV cache beside f32 activations, as llama.cpp's CPU default).
    match (q.dtype, k.dtype) {
        (Dtype::F32, Dtype::F32) => run::<f32, f32>(&q, &k, &v, scale, &msrc, &dims, &mut o),
        (Dtype::F32, Dtype::F16) => run::<f32, f16>(&q, &k, &v, scale, &msrc, &dims, &mut o),
        (Dtype::F32, Dtype::BF16) => run::<f32, bf16>(&q, &k, &v, scale, &msrc, &dims, &mut o),
        (Dtype::F16, Dtype::F16) => run::<f16, f16>(&q, &k, &v, scale, &msrc, &dims, &mut o),
        (Dtype::BF16, Dtype::BF16) => run::<bf16, bf16>(&q, &k, &v, scale, &msrc, &dims, &mut o),
        (a, b) => return Err(bad(format!("unsupported types: q {a}, keys/values {b}"))),
    }
    Ok(o)
}

fn run<Q: Element, T: KvElem>(
    q: &ArrayData,
    k: &ArrayData,
    v: &ArrayData,
    scale: f32,
    mask: &MaskSrc,
    dm: &Dims,
    out: &mut ArrayData,
) {
    let n_tasks = dm.b * dm.hkv * dm.n_qblk * dm.n_split;
    // The calling thread computes tasks too (a decode step has only a few, see `parallel`).
    let parts: Vec<Partial> =
        crate::parallel::map_tasks(n_tasks, |t| task::<Q, T>(t, q, k, v, scale, mask, dm));
    // Merge the key splits of each (batch, kv head, query block) and write rows out.
    let dst: &mut [Q] = out_slice_mut(out);
    for (base, group) in parts.chunks(dm.n_split).enumerate() {
        let (bi, hk, qb) = (
            base / (dm.hkv * dm.n_qblk),
            (base / dm.n_qblk) % dm.hkv,
            base % dm.n_qblk,
        );
        let q0 = qb * dm.lb;
        let lbe = dm.lb.min(dm.l - q0);
        let mut row = vec![0f32; dm.dv];
        for r in 0..dm.g * lbe {
            let m = group
                .iter()
                .map(|p| p.m[r])
                .fold(f32::NEG_INFINITY, f32::max);
            row.iter_mut().for_each(|x| *x = 0.0);
            let mut lsum = 0f32;
            for p in group {
                if p.m[r] == f32::NEG_INFINITY {
                    continue;
                }
                let c = (p.m[r] - m).exp();
                lsum += p.l[r] * c;
                for (x, a) in row.iter_mut().zip(&p.acc[r * dm.dv..(r + 1) * dm.dv]) {
                    *x += a * c;
                }
            }
            let (gi, li) = (r / lbe, r % lbe);
            let h = hk * dm.g + gi;
            let start = ((bi * dm.hq + h) * dm.l + q0 + li) * dm.dv;
            let inv = 1.0 / lsum; // 0 weight in total → NaN, as MLX's softmax of all -inf
            for (o, x) in dst[start..start + dm.dv].iter_mut().zip(&row) {
                *o = Q::from_f32(x * inv);
            }
        }
    }
}

/// One task: rows = (head g of the group, query li of the block), keys of one split.
fn task<Q: Element, T: KvElem>(
    t: usize,
    q: &ArrayData,
    k: &ArrayData,
    v: &ArrayData,
    scale: f32,
    mask: &MaskSrc,
    dm: &Dims,
) -> Partial {
    let sp = t % dm.n_split;
    let base = t / dm.n_split;
    let (bi, hk, qb) = (
        base / (dm.hkv * dm.n_qblk),
        (base / dm.n_qblk) % dm.hkv,
        base % dm.n_qblk,
    );
    let q0 = qb * dm.lb;
    let lbe = dm.lb.min(dm.l - q0);
    let rows = dm.g * lbe;
    let (d, dv) = (dm.d, dm.dv);
    let (qd, kd, vd) = (q.buffer_as::<Q>(), k.buffer_as::<T>(), v.buffer_as::<T>());
    let (ql, kl, vl) = (Lay::of(q), Lay::of(k), Lay::of(v));
    // Scaled queries in f32: [rows, D].
    let mut qf = vec![0f32; rows * d];
    for r in 0..rows {
        let (h, i) = (hk * dm.g + r / lbe, q0 + r % lbe);
        let st = ql.at(bi, h, i);
        for (dst, src) in qf[r * d..(r + 1) * d].iter_mut().zip(&qd[st..st + d]) {
            *dst = src.to_f32() * scale;
        }
    }
    // Causal: the last visible key of each row; rows that see none attend uniformly (MLX).
    let causal = matches!(mask, MaskSrc::Causal);
    let lim = |r: usize| (q0 + r % lbe) as isize + dm.s as isize - dm.l as isize;
    let none_visible = causal && (0..rows).any(|r| lim(r) < 0);
    let mut k_end = ((sp + 1) * dm.split_len).min(dm.s);
    if causal && !none_visible {
        let max_lim = (0..rows).map(lim).max().unwrap_or(-1);
        k_end = k_end.min((max_lim + 1).max(0) as usize);
    }
    let k_start = (sp * dm.split_len).min(k_end);

    let mut p = Partial {
        m: vec![f32::NEG_INFINITY; rows],
        l: vec![0.0; rows],
        acc: vec![0.0; rows * dv],
    };
    let mut sc = vec![0f32; rows * KB];
    // Prefill (more query rows than a decode step has) takes the tiled block products; a
    // decode step's few rows stream K and V once with dot products (widening and transposing
    // a block for 1-8 queries cost more than it saved: SmolLM2 generation 162 -> 118 tok/s).
    // Chosen by the call's query length, so a prompt row takes the same path in any task.
    let tiled = dm.l > DECODE_MAX_ROWS;
    let mut blk = tile::KvBlock::default();
    let mut j0 = k_start;
    while j0 < k_end {
        let kb = KB.min(k_end - j0);
        if tiled {
            // the block's K and V rows in f32 once for all rows of the group
            blk.load::<T>(
                kb,
                d,
                dv,
                |j| &kd[kl.at(bi, hk, j0 + j)..][..d],
                |j| &vd[vl.at(bi, hk, j0 + j)..][..dv],
            );
            blk.scores(&qf, rows, d, &mut sc, KB);
        } else {
            // scores[r][j] = q_r . k_j  (each K row read once for all rows of the group)
            for j in 0..kb {
                let krow = &kd[kl.at(bi, hk, j0 + j)..][..d];
                for r in 0..rows {
                    sc[r * KB + j] = dot(&qf[r * d..(r + 1) * d], krow);
                }
            }
        }
        for r in 0..rows {
            // A causal block ends at the task's last row, so one query meets blocks of
            // different lengths in different tasks; the exp sum ignores the masked keys past
            // its own limit bit for bit (`vmath::exp_sub_sum_inplace`), so its row does not
            // depend on its task.
            let srow = &mut sc[r * KB..r * KB + kb];
            let (h, i) = (hk * dm.g + r / lbe, q0 + r % lbe);
            if causal {
                let lr = lim(r);
                if lr < 0 {
                    srow.iter_mut().for_each(|x| *x = 0.0);
                } else {
                    for (j, x) in srow.iter_mut().enumerate() {
                        if (j0 + j) as isize > lr {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }
            } else {
                mask.apply(bi, h, i, j0, srow);
            }
            // Online softmax update of row r.
            let bm = srow.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let m_new = p.m[r].max(bm);
            if m_new == f32::NEG_INFINITY {
                srow.iter_mut().for_each(|x| *x = 0.0);
                continue;
            }
            let corr = (p.m[r] - m_new).exp();
            if corr != 1.0 {
                p.l[r] *= corr;
                p.acc[r * dv..(r + 1) * dv]
                    .iter_mut()
                    .for_each(|a| *a *= corr);
            }
            // vector exp: libm's scalar expf per score was a visible slice of long-context decode
            p.l[r] += crate::vmath::exp_sub_sum_inplace(srow, m_new);
            p.m[r] = m_new;
        }
        // acc[r] += p[r][j] * v_j
        if tiled {
            blk.accumulate(&sc, KB, rows, dv, &mut p.acc);
        } else {
            for j in 0..kb {
                let vrow = &vd[vl.at(bi, hk, j0 + j)..][..dv];
                for r in 0..rows {
                    let w = sc[r * KB + j];
                    if w != 0.0 {
                        axpy(&mut p.acc[r * dv..(r + 1) * dv], w, vrow);
                    }
                }
            }
        }
        j0 += kb;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(v: &[f32], shape: &[usize]) -> ArrayData {
        let mut d = ArrayData::alloc(shape, Dtype::F32).unwrap();
        out_slice_mut::<f32>(&mut d).copy_from_slice(v);
        d
    }

    /// Naive attention for one head: softmax(q k^T * scale) v, with an optional keep-mask.
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        l: usize,
        s: usize,
        d: usize,
        keep: impl Fn(usize, usize) -> bool,
    ) -> Vec<f32> {
        let mut out = vec![0f32; l * d];
        for i in 0..l {
            let sc: Vec<f32> = (0..s)
                .map(|j| {
                    if keep(i, j) {
                        (0..d).map(|t| q[i * d + t] * k[j * d + t]).sum::<f32>()
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            let m = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = sc.iter().map(|x| (x - m).exp()).collect();
            let z: f32 = e.iter().sum();
            for j in 0..s {
                for t in 0..d {
                    out[i * d + t] += e[j] / z * v[j * d + t];
                }
            }
        }
        out
    }

    #[test]
    fn forced_key_splits_merge_exactly() {
        // One query against 300 keys split 1..=7 ways, bool mask with a fully masked prefix.
        let (s, d) = (300, 8);
        let f = |n: usize, a: f32| (0..n).map(|i| (i as f32 * a).sin()).collect::<Vec<f32>>();
        let (qv, kv, vv) = (f(d, 0.37), f(s * d, 0.11), f(s * d, 0.23));
        let mut m = ArrayData::alloc(&[1, 1, 1, s], Dtype::Bool).unwrap();
        let keep = |j: usize| j >= 150 && !j.is_multiple_of(3);
        for (j, b) in out_slice_mut::<Bool8>(&mut m).iter_mut().enumerate() {
            *b = Bool8(keep(j) as u8);
        }
        let want = naive(&qv, &kv, &vv, 1, s, d, |_, j| keep(j));
        for n in 1..=7 {
            let x = [
                data(&qv, &[1, 1, 1, d]),
                data(&kv, &[1, 1, s, d]),
                data(&vv, &[1, 1, s, d]),
                m.clone(),
            ];
            let spec = OutputSpec {
                shape: &[1, 1, 1, d],
                dtype: Dtype::F32,
            };
            let y = sdpa_split(&x, 1.0, SdpaMask::Array, &spec, Some(n)).unwrap();
            for (g, w) in y.as_slice::<f32>().unwrap().iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "splits {n}: {g} vs {w}");
            }
        }
    }

    /// Prefill rows (more than a decode step's) take the tiled block products: GQA, causal,
    /// f32 and f16 inputs against the naive reference; and the last rows computed as a suffix
    /// (after a cached prefix) are the same bits as in the whole prompt's call.
    #[test]
    fn tiled_prefill_matches_naive_and_a_suffix_matches_the_whole() {
        let (hq, hkv, s, d) = (6, 2, 300, 64);
        // varied magnitudes (scores of a few units), so that sums in another order round apart
        let f = |n: usize, a: f32| {
            (0..n)
                .map(|i| (i as f32 * a).sin() * (1.0 + 2.0 * (i as f32 * 0.013).cos().abs()))
                .collect::<Vec<f32>>()
        };
        let (qv, kv, vv) = (
            f(hq * s * d, 0.37),
            f(hkv * s * d, 0.11),
            f(hkv * s * d, 0.23),
        );
        let run = |l: usize, dtype: Dtype| {
            let as_t = |v: &[f32], shape: &[usize]| {
                let a = data(v, shape);
                crate::copy::astype(&a, dtype).unwrap()
            };
            // the last l query rows of every head
            let q: Vec<f32> = (0..hq)
                .flat_map(|h| qv[(h * s + s - l) * d..(h + 1) * s * d].to_vec())
                .collect();
            let x = [
                as_t(&q, &[1, hq, l, d]),
                as_t(&kv, &[1, hkv, s, d]),
                as_t(&vv, &[1, hkv, s, d]),
            ];
            let spec = OutputSpec {
                shape: &[1, hq, l, d],
                dtype,
            };
            let y = sdpa(&x, 0.125, SdpaMask::Causal, &spec).unwrap();
            crate::copy::astype(&y, Dtype::F32)
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        };
        for dtype in [Dtype::F32, Dtype::F16] {
            let whole = run(s, dtype);
            let tol = if dtype == Dtype::F32 { 1e-5 } else { 2e-2 };
            for h in 0..hq {
                let hk = h / (hq / hkv);
                let q: Vec<f32> = qv[h * s * d..(h + 1) * s * d]
                    .iter()
                    .map(|x| x * 0.125)
                    .collect();
                let kv_h = &kv[hk * s * d..(hk + 1) * s * d];
                let vv_h = &vv[hk * s * d..(hk + 1) * s * d];
                let want = naive(&q, kv_h, vv_h, s, s, d, |i, j| j <= i);
                for (g, w) in whole[h * s * d..(h + 1) * s * d].iter().zip(&want) {
                    assert!((g - w).abs() < tol, "{dtype} head {h}: {g} vs {w}");
                }
            }
            for l in [9, 11, 12, 13, 17, 23, 40] {
                let suffix = run(l, dtype);
                for h in 0..hq {
                    let (a, b) = (
                        &suffix[h * l * d..(h + 1) * l * d],
                        &whole[(h * s + s - l) * d..(h + 1) * s * d],
                    );
                    let differ = a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits());
                    assert_eq!(
                        differ.count(),
                        0,
                        "{dtype} suffix {l} head {h}: values differ"
                    );
                }
            }
        }
    }

    /// f16 (or bf16) keys and values under f32 queries (an f16 KV cache beside f32
    /// activations) give the bits of the same call with those keys and values widened to f32:
    /// the kernel widens each element exactly and sums in the same order. Decode and prefill.
    #[test]
    fn narrow_keys_and_values_under_f32_queries_equal_their_widened_values() {
        let (hq, hkv, s, d) = (6, 2, 300, 64);
        let f = |n: usize, a: f32| {
            (0..n)
                .map(|i| (i as f32 * a).sin() * 3.0)
                .collect::<Vec<_>>()
        };
        for kv_t in [Dtype::F16, Dtype::BF16] {
            for l in [1, 3, 40] {
                let q = data(&f(hq * l * d, 0.37), &[1, hq, l, d]);
                let narrow =
                    |v: Vec<f32>| crate::copy::astype(&data(&v, &[1, hkv, s, d]), kv_t).unwrap();
                let (k, v) = (narrow(f(hkv * s * d, 0.11)), narrow(f(hkv * s * d, 0.23)));
                let wide = |x: &ArrayData| crate::copy::astype(x, Dtype::F32).unwrap();
                let spec = OutputSpec {
                    shape: &[1, hq, l, d],
                    dtype: Dtype::F32,
                };
                let mixed = sdpa(
                    &[q.clone(), k.clone(), v.clone()],
                    0.125,
                    SdpaMask::Causal,
                    &spec,
                );
                let f32s = sdpa(
                    &[q.clone(), wide(&k), wide(&v)],
                    0.125,
                    SdpaMask::Causal,
                    &spec,
                );
                let (a, b) = (mixed.unwrap(), f32s.unwrap());
                let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
                assert!(
                    a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{kv_t} keys/values, {l} query rows"
                );
            }
            // keys and values of different types are refused
            let q = data(&f(hq * d, 0.37), &[1, hq, 1, d]);
            let k =
                crate::copy::astype(&data(&f(hkv * s * d, 0.1), &[1, hkv, s, d]), kv_t).unwrap();
            let v = data(&f(hkv * s * d, 0.2), &[1, hkv, s, d]);
            let spec = OutputSpec {
                shape: &[1, hq, 1, d],
                dtype: Dtype::F32,
            };
            assert!(sdpa(&[q, k, v], 1.0, SdpaMask::None, &spec).is_err());
        }
    }

    #[test]
    fn causal_matches_naive_across_blocks_and_splits() {
        // L=3 queries against S=300 keys (three key blocks, possibly split): end-aligned causal.
        let (l, s, d) = (3, 300, 8);
        let f = |n: usize, a: f32| (0..n).map(|i| (i as f32 * a).sin()).collect::<Vec<f32>>();
        let (qv, kv, vv) = (f(l * d, 0.37), f(s * d, 0.11), f(s * d, 0.23));
        let (q, k, v) = (
            data(&qv, &[1, 1, l, d]),
            data(&kv, &[1, 1, s, d]),
            data(&vv, &[1, 1, s, d]),
        );
        let spec = OutputSpec {
            shape: &[1, 1, l, d],
            dtype: Dtype::F32,
        };
        let y = sdpa(&[q, k, v], 1.0, SdpaMask::Causal, &spec).unwrap();
        let want = naive(&qv, &kv, &vv, l, s, d, |i, j| j <= i + s - l);
        for (g, w) in y.as_slice::<f32>().unwrap().iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }
}
