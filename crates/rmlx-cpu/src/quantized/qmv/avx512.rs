//! The int8 decode kernel on AVX-512 (F, BW, VL and VNNI): the 256-bit kernel's arithmetic with
//! 64 bytes of weight codes per instruction, which halves the instructions per byte. On the
//! 2-core Zen 5 the 256-bit 8-bit kernel was bound by instructions, not by memory: it streamed
//! 62 MB in about the same time whether the weights came from DRAM or partly from L3.
//!
//! Both widths multiply the codes unsigned (`vpdpbusd` is u8 × s8 into i32: no i16 step to
//! saturate, so the 8-bit codes need no sign trick), and the centring moves into the float
//! correction: `s Σ q x ≈ s [Σ q x̃ + c (Σ x − Σ x̃)]`, `c = 2^(bits−1)`, as the 256-bit 4-bit
//! kernel does. The sums are the same integers; the float additions run in another order, so
//! the outputs differ from the 256-bit kernel's in the last bits (tested against it).
//!
//! Per step of 16 blocks of 32 codes, a row loads its 16 blocks' scales and biases (a short
//! last step clears the lanes past the row in a register). 8-bit: two blocks per vector.
//! 4-bit: four blocks per vector, `x` laid out by `interleave_nibbles(.., 4)`; a row's last one
//! to three blocks come as a pair and a single block through exact-size loads of the same code.
//! Loads from memory are plain: masked ones measured ~1.3× slower per product on the Zen 5.

use super::{for_row_ranges, Ctx, OutPtr, Packed, QuantizedX};
use rmlx_core::dtype::Element;
use rmlx_core::Dtype;
use std::arch::x86_64::*;

/// How far ahead of the codes being multiplied their cache lines are requested (bytes). 4 KiB
/// measured best on the Zen 5 (against 1 and 8 KiB): the 4-bit 4096×14336 product went from
/// ~1,000 to ~800 µs, every other shape gained or stayed.
const PREFETCH: usize = 4096;

/// Whether this kernel runs (detected once; `RMLX_CPU_AVX512=0` keeps the 256-bit kernel, an
/// ablation switch).
pub fn available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
            && std::env::var("RMLX_CPU_AVX512").map_or(true, |v| v != "0")
    })
}

/// `out[m, n] = Σ_k x[m, k] * w[n, k]`, `m` in 1..=8.
///
/// # Safety
/// Requires what [`available`] checks; `w.bits` is 4 or 8, `w.group_size` 32, 64 or 128, the
/// scales f32, f16 or bf16.
pub unsafe fn qmv_int8<S: Element>(x: &[f32], m: usize, w: &Packed<S>, out: &mut [f32]) {
    // steps of 16 blocks; 4-bit x in chunks of 4 blocks (one vector of codes)
    let qx = QuantizedX::new(x, m, w, 16, 4, false);
    let four = w.bits == 4;
    let ctx = qx.ctx(w);
    with_const_rows!(m, M => for_row_ranges(w.n, w.bytes(), out, |range, ptr| {
        // SAFETY: the caller checked the features; each task owns its rows.
        unsafe {
            if four {
                rows::<S, M, true>(&ctx, range, ptr)
            } else {
                rows::<S, M, false>(&ctx, range, ptr)
            }
        }
    }))
}

/// 16 scales or biases from `p` as f32: a plain load, or with `mask` a masked one (the lanes
/// outside it zero and unread).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load16_raw<S: Element>(p: *const S, mask: Option<u16>) -> __m512 {
    let half = |p: *const S| match mask {
        None => _mm256_loadu_si256(p as *const __m256i),
        Some(m) => _mm256_maskz_loadu_epi16(m, p as *const i16),
    };
    match S::DTYPE {
        Dtype::F32 => match mask {
            None => _mm512_loadu_ps(p as *const f32),
            Some(m) => _mm512_maskz_loadu_ps(m, p as *const f32),
        },
        Dtype::F16 => _mm512_cvtph_ps(half(p)),
        Dtype::BF16 => _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half(p)), 16)),
        _ => unreachable!("scales are f32, f16 or bf16"),
    }
}

/// `count` (1..=16) scales or biases from `all[start..]` as f32, zeros past `count`. Short
/// counts read on into the next row and clear those lanes in a register; only the matrix's
/// end takes a masked load (masked loads from memory measured ~1.3× slower per product on the
/// Zen 5 than plain ones, for the codes and the scales alike).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load16<S: Element>(all: &[S], start: usize, count: usize) -> __m512 {
    debug_assert!((1..=16).contains(&count) && start + count <= all.len());
    let p = all.as_ptr().add(start);
    if count == 16 {
        return load16_raw(p, None);
    }
    let mask = (u32::MAX >> (32 - count)) as u16;
    if start + 16 <= all.len() {
        _mm512_maskz_mov_ps(mask, load16_raw(p, None))
    } else {
        load16_raw(p, Some(mask))
    }
}

/// `bytes` (64, 32 or 16) bytes from `p` in the low end of a vector, zeros above: exact-size
/// loads, so a row's last blocks read nothing past it.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_bytes(p: *const u8, bytes: usize) -> __m512i {
    match bytes {
        64 => _mm512_loadu_si512(p as *const __m512i),
        32 => _mm512_zextsi256_si512(_mm256_loadu_si256(p as *const __m256i)),
        _ => _mm512_zextsi128_si512(_mm_loadu_si128(p as *const __m128i)),
    }
}

/// Output rows `range` for `M` rows of `x`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
unsafe fn rows<S: Element, const M: usize, const FOUR: bool>(
    c: &Ctx<S>,
    range: std::ops::Range<usize>,
    out: OutPtr,
) {
    let n = c.w.n;
    for r in range {
        for (mi, v) in row::<S, M, FOUR>(c, r).iter().enumerate() {
            // SAFETY: row r belongs to this task; mi < m, r < n.
            *out.0.add(mi * n + r) = *v;
        }
    }
}

/// The `M` outputs of weight row `r`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
unsafe fn row<S: Element, const M: usize, const FOUR: bool>(c: &Ctx<S>, r: usize) -> [f32; M] {
    let w = c.w;
    let (k, gs) = (w.k, w.group_size);
    let (groups, nblk, bpg, nblk_p) = (k / gs, k / 32, gs / 32, c.nblk_p);
    // Bytes of codes per block of 32.
    let cb = if FOUR { 16 } else { 32 };
    let row = (w.wq.as_ptr() as *const u8).add(r * nblk * cb);
    let xq = c.xq.as_ptr();
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    // Per-group values to per-block lanes: lane i takes group i / bpg (bpg is 1, 2 or 4).
    let expand = _mm512_srlv_epi32(lane, _mm512_set1_epi32(bpg.trailing_zeros() as i32));
    // Which block of the vector's a lane of integer sums belongs to: 8 lanes per 8-bit block,
    // 4 per 4-bit block (low and high nibbles of 16 bytes).
    let lane_block = _mm512_srlv_epi32(lane, _mm512_set1_epi32(if FOUR { 2 } else { 3 }));
    let low4 = _mm512_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); M];
    let mut bacc = [_mm512_setzero_ps(); M];
    let mut b0 = 0;
    while b0 < nblk {
        let nb = (nblk - b0).min(16);
        let (g0, ng) = (b0 / bpg, nb / bpg);
        let s16 = _mm512_permutexvar_ps(expand, load16(w.scales, r * groups + g0, ng));
        let b16 = _mm512_permutexvar_ps(expand, load16(w.biases, r * groups + g0, ng));
        let mut sd = [_mm512_setzero_ps(); M];
        for mi in 0..M {
            let o = mi * nblk_p + b0;
            sd[mi] = _mm512_mul_ps(s16, _mm512_loadu_ps(c.d.as_ptr().add(o)));
            bacc[mi] = _mm512_fmadd_ps(b16, _mm512_loadu_ps(c.xb.as_ptr().add(o)), bacc[mi]);
            bacc[mi] = _mm512_fmadd_ps(s16, _mm512_loadu_ps(c.eb.as_ptr().add(o)), bacc[mi]);
        }
        // Ask for the codes PREFETCH bytes ahead (the next rows once near a row's end): more
        // misses in flight than the hardware streamer keeps on its own.
        for l in (0..nb * cb).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(row.add(b0 * cb + l + PREFETCH) as *const i8);
        }
        let mut j = 0;
        while j < nb {
            // Blocks in this vector: 4 (4-bit) or 2 (8-bit), fewer at a row's end.
            let blocks = if FOUR {
                [4, 2, 1].into_iter().find(|&c| c <= nb - j).unwrap_or(1)
            } else {
                (nb - j).min(2)
            };
            let bytes = blocks * cb;
            let b = b0 + j;
            let q = load_bytes(row.add(b * cb), bytes);
            let pick = _mm512_add_epi32(lane_block, _mm512_set1_epi32(j as i32));
            let (lo, hi) = if FOUR {
                (
                    _mm512_and_si512(q, low4),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(q), low4),
                )
            } else {
                (q, q)
            };
            for mi in 0..M {
                let xp = xq.add(mi * k + b * 32) as *const u8;
                let p = if FOUR {
                    // x's chunk: its evens (the low nibbles' partners), then its odds.
                    let xe = load_bytes(xp, bytes);
                    let xo = load_bytes(xp.add(bytes), bytes);
                    _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xe), hi, xo)
                } else {
                    let xv = load_bytes(xp, bytes);
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xv)
                };
                let st = _mm512_permutexvar_ps(pick, sd[mi]);
                acc[mi] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), st, acc[mi]);
            }
            j += blocks;
        }
        b0 += 16;
    }
    std::array::from_fn(|mi| _mm512_reduce_add_ps(_mm512_add_ps(acc[mi], bacc[mi])))
}
