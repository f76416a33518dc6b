//! Decode-shaped quantized matmul (`x: [m, k]`, `m <= 8`, transposed weights `[n, k]`): memory
//! bound, so every thread streams its own block of packed weight rows exactly once.
//!
//! Two paths:
//! - **exact** (portable, any bits): per group, `scale * Σ q_i x_i + bias * Σ x_i` in f32.
//! - **int8** (AVX2/FMA, 4 and 8 bits, group a multiple of 32; llama.cpp's trick): each row of
//!   `x` is quantized once per block of 32 to int8 (`d = max|x| / 127`), then
//!   `Σ q_i x_i ≈ d Σ q_i xq_i` with integer dot products (`_mm256_maddubs_epi16`); the bias
//!   term uses the exact f32 `Σ x_i`. Codes are centred (`q - 8`, `q - 128`) so that
//!   `Σ (s q + b) x = s Σ (q - c) x + (b + c s) Σ x`. Accuracy: each `x_i` moves by at most
//!   `d/2`, so an output errs by at most `Σ_blocks |s| d/2 Σ |q_i - c|`; measured: ~1e-3 of
//!   max|out| for zero-centred weights, up to ~1e-2 for groups with large offsets (tests), the
//!   same trade llama.cpp makes for Q4_0/Q8_0. `set_exact(true)` or `RMLX_QMV_EXACT=1` turns it off.

use super::pack::unpack;
use rayon::prelude::*;
use rmlx_core::dtype::Element;
use std::sync::atomic::{AtomicU8, Ordering};

/// Output rows per parallel task (weights of 32 rows x 4096 are 64 KiB at 4 bits).
const ROWS_PER_TASK: usize = 32;

static MODE: AtomicU8 = AtomicU8::new(0); // 0 = unread, 1 = fast, 2 = exact

/// Forces the exact float decode path (`true`) or allows the int8 path (`false`). The
/// default is the int8 path unless the environment variable `RMLX_QMV_EXACT=1` is set.
pub fn set_exact(exact: bool) {
    MODE.store(if exact { 2 } else { 1 }, Ordering::Relaxed);
}

fn exact_mode() -> bool {
    match MODE.load(Ordering::Relaxed) {
        0 => {
            let exact = std::env::var("RMLX_QMV_EXACT")
                .map(|v| v == "1")
                .unwrap_or(false);
            set_exact(exact);
            exact
        }
        m => m == 2,
    }
}

/// The weights of one product: `wq: [n, k*bits/32]`, `scales`, `biases`: `[n, k/group_size]`.
pub struct Packed<'a, S> {
    pub wq: &'a [u32],
    pub scales: &'a [S],
    pub biases: &'a [S],
    pub n: usize,
    pub k: usize,
    pub group_size: usize,
    pub bits: usize,
}

/// `out[m, n] = Σ_k x[m, k] * w[n, k]` for `x: [m, k]` (f32, `m <= 8`); picks the int8 path
/// when available and allowed, else the exact one.
pub fn qmv<S: Element>(x: &[f32], m: usize, w: &Packed<S>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if !exact_mode() && int8_supported(w) {
            // SAFETY: AVX2 and FMA were detected at run time.
            return unsafe { avx2::qmv_int8(x, m, w, out) };
        }
    }
    qmv_exact(x, m, w, out)
}

/// Whether the int8 path can run these weights on this machine.
pub fn int8_supported<S>(w: &Packed<S>) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        (w.bits == 4 || w.bits == 8)
            && w.group_size.is_multiple_of(32)
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = w;
        false
    }
}

/// Σ x over each group: `[m, k/group_size]`, exact in f32 (it multiplies the biases).
fn group_sums(x: &[f32], m: usize, k: usize, group_size: usize) -> Vec<f32> {
    let mut sums = Vec::with_capacity(m * k / group_size);
    for row in x.chunks(k).take(m) {
        sums.extend(row.chunks(group_size).map(|g| g.iter().sum::<f32>()));
    }
    sums
}

/// Runs `row(n, out_n)` for every weight row in parallel, where `out_n: [m]`, then writes the
/// `[n, m]` results into `out: [m, n]`.
fn for_rows(m: usize, n: usize, out: &mut [f32], row: impl Fn(usize, &mut [f32]) + Sync) {
    let mut out_t = vec![0f32; n * m];
    out_t
        .par_chunks_mut(ROWS_PER_TASK * m)
        .enumerate()
        .for_each(|(t, chunk)| {
            for (i, o) in chunk.chunks_mut(m).enumerate() {
                row(t * ROWS_PER_TASK + i, o);
            }
        });
    for (r, o) in out_t.chunks(m).enumerate() {
        for (mi, v) in o.iter().enumerate() {
            out[mi * n + r] = *v;
        }
    }
}

/// The exact (float) decode path; portable, every bit width and group size.
pub fn qmv_exact<S: Element>(x: &[f32], m: usize, w: &Packed<S>, out: &mut [f32]) {
    let (k, gs) = (w.k, w.group_size);
    let groups = k / gs;
    let words = k * w.bits / 32;
    let sums = group_sums(x, m, k, gs);
    for_rows(m, w.n, out, |r, o| {
        let row = &w.wq[r * words..(r + 1) * words];
        let mut q = [0u8; 128];
        let mut qf = [0f32; 128];
        o.fill(0.0);
        for g in 0..groups {
            unpack(row, w.bits, g * gs, &mut q[..gs]);
            for (f, &qi) in qf.iter_mut().zip(&q[..gs]) {
                *f = qi as f32;
            }
            let (s, b) = (
                w.scales[r * groups + g].to_f32(),
                w.biases[r * groups + g].to_f32(),
            );
            for (mi, acc) in o.iter_mut().enumerate() {
                let xs = &x[mi * k + g * gs..mi * k + (g + 1) * gs];
                *acc += s * dot(&qf[..gs], xs) + b * sums[mi * groups + g];
            }
        }
    });
}

/// A dot product with 8 independent partial sums (vectorizes without fast-math).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (a, b) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += a[i] * b[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(a, b)| a * b).sum();
    acc.iter().sum::<f32>() + tail
}

/// `x` quantized per block of 32 to int8: codes `[m, k]` and steps `[m, k/32]`. With
/// `nibble_order`, each block is stored as its even elements then its odd ones, the order in
/// which 16 packed 4-bit bytes unpack (low nibbles, then high nibbles).
/// Also returns `d * Σ xq` per block (`[m, k/32]`), the x-side of the centring correction.
pub fn quantize_x(
    x: &[f32],
    m: usize,
    k: usize,
    nibble_order: bool,
) -> (Vec<i8>, Vec<f32>, Vec<f32>) {
    let mut xq = vec![0i8; m * k];
    let mut d = vec![0f32; m * k / 32];
    let mut dsum = vec![0f32; m * k / 32];
    for (blk, (qb, (db, ds))) in x[..m * k]
        .chunks(32)
        .zip(xq.chunks_mut(32).zip(d.iter_mut().zip(dsum.iter_mut())))
    {
        let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
        *db = amax / 127.0;
        let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (i, v) in blk.iter().enumerate() {
            let pos = if nibble_order {
                (i % 2) * 16 + i / 2
            } else {
                i
            };
            qb[pos] = (v * id).round() as i8;
        }
        *ds = *db * qb.iter().map(|&v| v as i32).sum::<i32>() as f32;
    }
    (xq, d, dsum)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// # Safety
    /// Requires AVX2 and FMA; `w.bits` is 4 or 8 and `w.group_size % 32 == 0`.
    pub unsafe fn qmv_int8<S: Element>(x: &[f32], m: usize, w: &Packed<S>, out: &mut [f32]) {
        let (xq, d, dsum) = quantize_x(x, m, w.k, w.bits == 4);
        let sums = group_sums(x, m, w.k, w.group_size);
        // Per group: Σ_blocks d Σ xq, what the unsigned 4-bit dot over-counts per unit of c.
        let dsum_g: Vec<f32> = dsum
            .chunks(w.group_size / 32)
            .map(|c| c.iter().sum())
            .collect();
        let ctx = Ctx {
            xq: &xq,
            d: &d,
            sums: &sums,
            dsum: &dsum_g,
            w,
        };
        macro_rules! go {
            ($($mm:literal)*) => {
                match m {
                    $($mm => for_rows(m, w.n, out, |r, o| {
                        // SAFETY: features checked by the caller.
                        unsafe { if w.bits == 4 { row4::<S, $mm>(&ctx, r, o) } else { row8::<S, $mm>(&ctx, r, o) } }
                    }),)*
                    _ => unreachable!("decode path takes 1..=8 rows"),
                }
            };
        }
        go!(1 2 3 4 5 6 7 8);
    }

    struct Ctx<'a, S> {
        xq: &'a [i8],
        d: &'a [f32],
        sums: &'a [f32],
        dsum: &'a [f32],
        w: &'a Packed<'a, S>,
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// One output row for 4-bit weights: 16 bytes → 32 unsigned codes, times int8 x.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row4<S: Element, const M: usize>(c: &Ctx<S>, r: usize, o: &mut [f32]) {
        let w = c.w;
        let (k, gs) = (w.k, w.group_size);
        let (groups, bpg, nblk) = (k / gs, gs / 32, k / 32);
        let row = (w.wq.as_ptr() as *const u8).add(r * k / 2);
        let low = _mm_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); M];
        let mut bsum = [0f32; M];
        for g in 0..groups {
            let s = w.scales[r * groups + g].to_f32();
            let b = w.biases[r * groups + g].to_f32();
            for j in 0..bpg {
                let blk = g * bpg + j;
                let v = _mm_loadu_si128(row.add(blk * 16) as *const __m128i);
                let lo = _mm_and_si128(v, low);
                let hi = _mm_and_si128(_mm_srli_epi16(v, 4), low);
                let q = _mm256_set_m128i(hi, lo);
                for mi in 0..M {
                    let xv =
                        _mm256_loadu_si256(c.xq.as_ptr().add(mi * k + blk * 32) as *const __m256i);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, xv), ones);
                    let f = _mm256_set1_ps(s * *c.d.get_unchecked(mi * nblk + blk));
                    acc[mi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc[mi]);
                }
            }
            // Centred at 8: s Σ q x̃ - 8 s Σ x̃ + (b + 8 s) Σ x (the unsigned dot stays cheap).
            for mi in 0..M {
                bsum[mi] +=
                    (b + 8.0 * s) * c.sums[mi * groups + g] - 8.0 * s * c.dsum[mi * groups + g];
            }
        }
        for mi in 0..M {
            o[mi] = hsum(acc[mi]) + bsum[mi];
        }
    }

    /// One output row for 8-bit weights: codes centred at 128 (signed), sign trick for
    /// `maddubs` (|q - 128| unsigned times x carrying q's sign; no i16 overflow).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row8<S: Element, const M: usize>(c: &Ctx<S>, r: usize, o: &mut [f32]) {
        let w = c.w;
        let (k, gs) = (w.k, w.group_size);
        let (groups, bpg, nblk) = (k / gs, gs / 32, k / 32);
        let row = (w.wq.as_ptr() as *const u8).add(r * k);
        let flip = _mm256_set1_epi8(-128);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); M];
        let mut bsum = [0f32; M];
        for g in 0..groups {
            let s = w.scales[r * groups + g].to_f32();
            let b = w.biases[r * groups + g].to_f32();
            for j in 0..bpg {
                let blk = g * bpg + j;
                let qs = _mm256_xor_si256(
                    _mm256_loadu_si256(row.add(blk * 32) as *const __m256i),
                    flip,
                );
                let qa = _mm256_sign_epi8(qs, qs);
                for mi in 0..M {
                    let xv =
                        _mm256_loadu_si256(c.xq.as_ptr().add(mi * k + blk * 32) as *const __m256i);
                    let p =
                        _mm256_madd_epi16(_mm256_maddubs_epi16(qa, _mm256_sign_epi8(xv, qs)), ones);
                    let f = _mm256_set1_ps(s * *c.d.get_unchecked(mi * nblk + blk));
                    acc[mi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc[mi]);
                }
            }
            // Σ (s q + b) x = s Σ (q - 128) x + (b + 128 s) Σ x.
            for mi in 0..M {
                bsum[mi] += (b + 128.0 * s) * c.sums[mi * groups + g];
            }
        }
        for mi in 0..M {
            o[mi] = hsum(acc[mi]) + bsum[mi];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pack::{pack_row, quantize_group};
    use super::*;

    /// A pseudo-random quantized matrix and its f64 dequantized copy.
    fn setup(
        n: usize,
        k: usize,
        gs: usize,
        bits: usize,
    ) -> (Vec<u32>, Vec<f32>, Vec<f32>, Vec<f64>) {
        let mut seed = 12345u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        let (mut wq, mut s, mut b, mut deq) = (vec![], vec![], vec![], vec![]);
        for _ in 0..n {
            let mut q = vec![0u8; k];
            for g in 0..k / gs {
                let w: Vec<f32> = (0..gs).map(|_| rnd()).collect();
                let (sc, bi) = quantize_group(&w, bits, &mut q[g * gs..(g + 1) * gs]);
                s.push(sc);
                b.push(bi);
                deq.extend(
                    q[g * gs..(g + 1) * gs]
                        .iter()
                        .map(|&qi| sc as f64 * qi as f64 + bi as f64),
                );
            }
            let mut words = vec![0u32; k * bits / 32];
            pack_row(&q, bits, &mut words);
            wq.extend(words);
        }
        (wq, s, b, deq)
    }

    #[test]
    fn exact_and_int8_paths_match_f64_reference() {
        let (n, k) = (70, 256);
        for bits in [2, 3, 4, 5, 6, 8] {
            for gs in [32, 64, 128] {
                let (wq, s, b, deq) = setup(n, k, gs, bits);
                let w = Packed {
                    wq: &wq,
                    scales: &s,
                    biases: &b,
                    n,
                    k,
                    group_size: gs,
                    bits,
                };
                for m in [1, 3, 8] {
                    let x: Vec<f32> = (0..m * k)
                        .map(|i| (i * 37 % 101) as f32 / 50.0 - 1.0)
                        .collect();
                    let want: Vec<f64> = (0..m * n)
                        .map(|i| {
                            let (mi, r) = (i / n, i % n);
                            (0..k).map(|j| x[mi * k + j] as f64 * deq[r * k + j]).sum()
                        })
                        .collect();
                    let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
                    let mut got = vec![0f32; m * n];
                    qmv_exact(&x, m, &w, &mut got);
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (*g as f64 - w).abs() <= 1e-5 * scale,
                            "exact bits {bits} gs {gs} m {m}: {g} vs {w}"
                        );
                    }
                    #[cfg(target_arch = "x86_64")]
                    if int8_supported(&w) {
                        let mut got = vec![0f32; m * n];
                        unsafe { avx2::qmv_int8(&x, m, &w, &mut got) };
                        let mut worst = 0f64;
                        for (g, w) in got.iter().zip(&want) {
                            worst = worst.max((*g as f64 - w).abs() / scale);
                        }
                        eprintln!("int8 path bits {bits} gs {gs} m {m}: max error / max output = {worst:.2e}");
                        // Documented accuracy of the int8 path: within 1% of the output scale.
                        assert!(
                            worst <= 1e-2,
                            "int8 bits {bits} gs {gs} m {m}: relative error {worst}"
                        );
                    }
                }
            }
        }
    }
}
