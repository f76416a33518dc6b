//! Decode-shaped quantized matmul (`x: [m, k]`, `m <= 8`, transposed weights `[n, k]`): memory
//! bound, so every thread streams its own block of packed weight rows exactly once.
//!
//! Two paths:
//! - **exact** (portable, any bits): per group, `scale * Σ q_i x_i + bias * Σ x_i` in f32.
//! - **int8** (AVX2/FMA/F16C, 4 and 8 bits, groups of 32, 64 or 128; llama.cpp's trick): each row of
//!   `x` is quantized once per block of 32 to int8 (`d = max|x| / 127`), then
//!   `Σ q_i x_i ≈ d Σ q_i xq_i` with integer dot products (`_mm256_maddubs_epi16`, or AVX-VNNI's
//!   `vpdpbusd` where the CPU has it: the same integer sums, so the same bits; [`avx512`]: the
//!   same arithmetic 64 bytes at a time where the CPU has AVX-512 VNNI); the bias
//!   term uses the exact f32 `Σ x_i`. Codes are centred (`q - 8`, `q - 128`) so that
//!   `Σ (s q + b) x = s Σ (q - c) x + (b + c s) Σ x`. Accuracy: each `x_i` moves by at most
//!   `d/2`, so an output errs by at most `Σ_blocks |s| d/2 Σ |q_i - c|`; measured: ~1e-3 of
//!   max|out| for zero-centred weights, up to ~1e-2 for groups with large offsets (tests), the
//!   same trade llama.cpp makes for Q4_0/Q8_0. The caller picks (`Primitive::QuantizedMatmul`'s `exact`, recorded from
//!   `rmlx_core::ops::quantized::exact_decode`: `RMLX_QMV_EXACT=1` or `with_exact_decode(true, ..)`).

use super::pack::unpack;
use rmlx_core::dtype::Element;

/// Runs `$body` with `$M` a constant equal to `$m`, one of the decode rows 1..=8: the int8 row
/// kernels take the rows of x as a const generic, so that their accumulators stay in registers.
#[cfg(target_arch = "x86_64")]
macro_rules! with_const_rows {
    ($m:expr, $M:ident => $body:expr) => {
        with_const_rows!(@arms $m, $M, $body, 1 2 3 4 5 6 7 8)
    };
    (@arms $m:expr, $M:ident, $body:expr, $($n:literal)*) => {
        match $m {
            $($n => {
                const $M: usize = $n;
                $body
            })*
            _ => unreachable!("decode path takes 1..=8 rows"),
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Weight bytes below which a product runs on the calling thread: waking a second thread
/// costs more than it saves on small matrices (SmolLM2's 576×576 is ~200 KiB).
const MIN_PARALLEL_BYTES: usize = 128 << 10;

/// Weight bytes per parallel task at least (larger matrices split into one task per thread,
/// a few more when they are big enough, so a slow thread does not hold the others up).
const MIN_TASK_BYTES: usize = 256 << 10;

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

impl<S> Packed<'_, S> {
    /// Bytes of the packed codes plus scales and biases.
    fn bytes(&self) -> usize {
        self.wq.len() * 4 + 2 * self.scales.len() * std::mem::size_of::<S>()
    }
}

/// `out[m, n] = Σ_k x[m, k] * w[n, k]` for `x: [m, k]` (f32, `m <= 8`); takes the int8 path
/// when it is available and not `exact`, else the exact one.
pub fn qmv<S: Element>(x: &[f32], m: usize, w: &Packed<S>, exact: bool, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if !exact && int8_supported(w) {
            if avx512::available() {
                // SAFETY: `available` detected AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
                return unsafe { avx512::qmv_int8(x, m, w, out) };
            }
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx2::qmv_int8(x, m, w, out) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = exact;
    qmv_exact(x, m, w, out)
}

/// Whether the int8 path can run these weights on this machine.
pub fn int8_supported<S>(w: &Packed<S>) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        (w.bits == 4 || w.bits == 8)
            && matches!(w.group_size, 32 | 64 | 128)
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = w;
        false
    }
}

/// A raw output pointer that parallel tasks write disjoint elements through.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes only the output columns of its own weight rows.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Runs `rows(r0..r1, out_ptr)` over the weight rows, on the calling thread for small matrices
/// and split into a few contiguous ranges (one or two per thread) for large ones. `rows` writes
/// `out[mi * n + r]` for its rows `r` only.
fn for_row_ranges(
    n: usize,
    bytes: usize,
    out: &mut [f32],
    rows: impl Fn(std::ops::Range<usize>, OutPtr) + Sync,
) {
    let ptr = OutPtr(out.as_mut_ptr());
    let threads = rayon::current_num_threads();
    if bytes < MIN_PARALLEL_BYTES || threads == 1 || n < 16 {
        return rows(0..n, ptr);
    }
    let tasks = (bytes / MIN_TASK_BYTES)
        .clamp(threads, 4 * threads)
        .min(n.div_ceil(8));
    // Ranges of whole groups of 8 rows (full-width stores of per-row outputs stay apart).
    let per = n.div_ceil(tasks).next_multiple_of(8);
    // The calling thread takes ranges too (`for_each_task`): no sleep and wake-up per product.
    crate::parallel::for_each_task(n.div_ceil(per), |t| {
        let r0 = t * per;
        rows(r0..(r0 + per).min(n), ptr)
    });
}

/// The exact (float) path; portable, every bit width and group size, any number of rows of
/// `x` (decode's `exact` mode and the widths without an int8 kernel). Each output is the same
/// sum in the same order whatever `m` is and whichever SIMD width runs it.
pub fn qmv_exact<S: Element>(x: &[f32], m: usize, w: &Packed<S>, out: &mut [f32]) {
    for_row_ranges(w.n, w.bytes(), out, |range, ptr| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected just above.
            return unsafe { exact_rows_avx2(x, m, w, range, ptr) };
        }
        exact_rows(x, m, w, range, ptr, dot4)
    });
}

/// [`exact_rows`] compiled for AVX2 (the same operations in the same order, 8 lanes wide).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exact_rows_avx2<S: Element>(
    x: &[f32],
    m: usize,
    w: &Packed<S>,
    range: std::ops::Range<usize>,
    ptr: OutPtr,
) {
    // SAFETY: AVX2 is enabled here; k is whole groups, so a multiple of 8.
    exact_rows(x, m, w, range, ptr, |wf, xs| unsafe { dot4_avx2(wf, xs) })
}

/// Output columns `range` of the exact path: each weight row is dequantized once (`s q + b`,
/// f32) into a buffer that stays in L1, then dotted with the rows of `x`, four at a time so
/// that each weight load serves four rows (`dot4`: [`dot4`] or [`dot4_avx2`], which sum alike).
#[inline(always)]
fn exact_rows<S: Element>(
    x: &[f32],
    m: usize,
    w: &Packed<S>,
    range: std::ops::Range<usize>,
    ptr: OutPtr,
    dot4: impl Fn(&[f32], &[f32]) -> [f32; 4],
) {
    let (k, gs, n) = (w.k, w.group_size, w.n);
    let groups = k / gs;
    let words = k * w.bits / 32;
    let mut q = [0u8; 128];
    let mut wf = vec![0f32; k];
    for r in range {
        let row = &w.wq[r * words..(r + 1) * words];
        let bytes: &[u8] = bytemuck::cast_slice(row);
        for g in 0..groups {
            let (s, b) = (
                w.scales[r * groups + g].to_f32(),
                w.biases[r * groups + g].to_f32(),
            );
            let wg = &mut wf[g * gs..(g + 1) * gs];
            match w.bits {
                // Whole nibbles and bytes straight from the row (the common widths).
                4 => {
                    for (f, &byte) in wg.chunks_exact_mut(2).zip(&bytes[g * gs / 2..]) {
                        f[0] = s * (byte & 15) as f32 + b;
                        f[1] = s * (byte >> 4) as f32 + b;
                    }
                }
                8 => {
                    for (f, &byte) in wg.iter_mut().zip(&bytes[g * gs..]) {
                        *f = s * byte as f32 + b;
                    }
                }
                _ => {
                    unpack(row, w.bits, g * gs, &mut q[..gs]);
                    for (f, &qi) in wg.iter_mut().zip(&q[..gs]) {
                        *f = s * qi as f32 + b;
                    }
                }
            }
        }
        let mut mi = 0;
        while mi + 4 <= m {
            let d = dot4(&wf, &x[mi * k..(mi + 4) * k]);
            for (j, v) in d.iter().enumerate() {
                // SAFETY: row r belongs to this task only; mi + j < m, r < n.
                unsafe { *ptr.0.add((mi + j) * n + r) = *v };
            }
            mi += 4;
        }
        for mi in mi..m {
            // SAFETY: as above.
            unsafe { *ptr.0.add(mi * n + r) = dot(&wf, &x[mi * k..(mi + 1) * k]) };
        }
    }
}

/// `[w · x0, w · x1, w · x2, w · x3]` for four consecutive rows `xs` of `w.len()` values, each
/// summed exactly as [`dot`] sums it (so a row's result does not depend on its neighbours).
#[inline(always)]
fn dot4(w: &[f32], xs: &[f32]) -> [f32; 4] {
    let k = w.len();
    std::array::from_fn(|r| dot(w, &xs[r * k..(r + 1) * k]))
}

/// [`dot4`] with 8-lane vectors: lane `i` of row `r` adds `w[j] * x_r[j]` for `j ≡ i (mod 8)`
/// in order, then the lanes are summed in order, as [`dot`] does (multiply, then add: no FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot4_avx2(w: &[f32], xs: &[f32]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let k = w.len();
    assert!(k.is_multiple_of(8) && xs.len() >= 4 * k);
    let (wp, xp) = (w.as_ptr(), xs.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    for c in (0..k).step_by(8) {
        let wv = _mm256_loadu_ps(wp.add(c));
        for (r, a) in acc.iter_mut().enumerate() {
            *a = _mm256_add_ps(*a, _mm256_mul_ps(wv, _mm256_loadu_ps(xp.add(r * k + c))));
        }
    }
    std::array::from_fn(|r| {
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r]);
        lanes.iter().sum::<f32>()
    })
}

/// A dot product with 8 independent partial sums (vectorizes without fast-math).
#[inline(always)]
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

/// Reorders a row of int8 codes of `x` (whole blocks of 32, natural order) into the order in
/// which packed 4-bit weight bytes unpack, chunk by chunk: chunks of `widest` blocks (2 for the
/// 256-bit kernel, 4 for the 512-bit one: one vector of weight bytes) while that many remain,
/// then halved chunks for the rest; a chunk of `c` blocks (`16 c` bytes of weights) holds its
/// `16 c` even elements (the low nibbles' partners) then its `16 c` odd ones (the high nibbles').
/// `widest` 0 leaves the row in natural order (the 8-bit kernels).
fn interleave_nibbles(row: &mut [i8], widest: usize) {
    let nblk = row.len() / 32;
    let mut tmp = [0i8; 128];
    let mut b = 0;
    while widest > 0 && b < nblk {
        let mut c = widest;
        while c > nblk - b {
            c /= 2;
        }
        let chunk = &mut row[b * 32..(b + c) * 32];
        let half = 16 * c;
        for t in 0..half {
            tmp[t] = chunk[2 * t];
            tmp[half + t] = chunk[2 * t + 1];
        }
        chunk.copy_from_slice(&tmp[..2 * half]);
        b += c;
    }
}

/// Everything about `x` the int8 row kernels share; per-block arrays are `[m, nblk_p]`, each
/// row of x padded with zeros to a multiple of the kernel's blocks per step (`nblk_p`).
#[cfg(target_arch = "x86_64")]
struct Ctx<'a, S> {
    xq: &'a [i8],
    /// int8 step of each block.
    d: &'a [f32],
    /// exact Σ x of each block (multiplies the biases).
    xb: &'a [f32],
    /// what multiplies the scale besides the integer dot (the centring correction).
    eb: &'a [f32],
    nblk_p: usize,
    w: &'a Packed<'a, S>,
}

/// `x` quantized for the int8 kernels, with what each block's scale multiplies besides the
/// integer dot: for codes centred at `c = 2^(bits-1)` and dotted as they are, `c (Σ x − Σ x̃)`;
/// for codes dotted centred (`centred_codes`, the 256-bit 8-bit kernel), `c Σ x`.
#[cfg(target_arch = "x86_64")]
struct QuantizedX {
    xq: Vec<i8>,
    d: Vec<f32>,
    xb: Vec<f32>,
    eb: Vec<f32>,
    nblk_p: usize,
}

#[cfg(target_arch = "x86_64")]
impl QuantizedX {
    /// `m` rows of `x` for weights `w` (4 or 8 bits), per-block arrays padded to a multiple of
    /// `step` blocks (the kernel's blocks per step), 4-bit codes laid out in chunks of
    /// `nibble_chunk` blocks (see [`interleave_nibbles`]).
    ///
    /// # Safety
    /// Requires AVX2 and FMA.
    unsafe fn new<S>(
        x: &[f32],
        m: usize,
        w: &Packed<S>,
        step: usize,
        nibble_chunk: usize,
        centred_codes: bool,
    ) -> QuantizedX {
        let nblk_p = (w.k / 32).next_multiple_of(step);
        let chunk = if w.bits == 4 { nibble_chunk } else { 0 };
        let (xq, d, xb, mut eb) = avx2::quantize_x_avx2(x, m, w.k, nblk_p, chunk);
        let centre = (1u32 << (w.bits - 1)) as f32;
        for (e, s) in eb.iter_mut().zip(&xb) {
            *e = if centred_codes {
                centre * s
            } else {
                centre * (s - *e)
            };
        }
        QuantizedX {
            xq,
            d,
            xb,
            eb,
            nblk_p,
        }
    }

    fn ctx<'a, S>(&'a self, w: &'a Packed<'a, S>) -> Ctx<'a, S> {
        Ctx {
            xq: &self.xq,
            d: &self.d,
            xb: &self.xb,
            eb: &self.eb,
            nblk_p: self.nblk_p,
            w,
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use rmlx_core::Dtype;
    use std::arch::x86_64::*;

    /// Whether the integer dots use AVX-VNNI (detected once; `RMLX_CPU_VNNI=0` keeps the
    /// `maddubs` sequence, an ablation switch).
    fn vnni_on() -> bool {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avxvnni")
                && std::env::var("RMLX_CPU_VNNI").map_or(true, |v| v != "0")
        })
    }

    /// How far ahead of the codes being multiplied their cache lines are requested (bytes).
    const PREFETCH: usize = 1024;

    /// # Safety
    /// Requires AVX2, FMA and F16C; `w.bits` is 4 or 8 and `w.group_size` is 32, 64 or 128;
    /// the scales are f32, f16 or bf16.
    pub unsafe fn qmv_int8<S: Element>(x: &[f32], m: usize, w: &Packed<S>, out: &mut [f32]) {
        qmv_int8_with(x, m, w, out, vnni_on())
    }

    /// [`qmv_int8`] with the integer dots on AVX-VNNI (`vnni`, which must be available) or on
    /// the `maddubs` sequence: the same integer sums, so the same output bits.
    ///
    /// # Safety
    /// As [`qmv_int8`], and AVX-VNNI when `vnni`.
    pub unsafe fn qmv_int8_with<S: Element>(
        x: &[f32],
        m: usize,
        w: &Packed<S>,
        out: &mut [f32],
        vnni: bool,
    ) {
        // Σ (s q + b) x = s Σ q x + b Σ x, and with codes centred at c (8 or 128):
        // s Σ q x ≈ s [Σ (q - c) x̃ + c Σ x] = s [Σ q x̃ + c (Σ x - Σ x̃)], x̃ = d·xq.
        // The 4-bit dot stays unsigned (q x̃ is what `maddubs` computes); the 8-bit one
        // multiplies the centred codes (sign trick). Steps of 8 blocks, pairs of 4-bit blocks.
        let qx = QuantizedX::new(x, m, w, 8, 2, w.bits == 8);
        let ctx = qx.ctx(w);
        with_const_rows!(m, M => for_row_ranges(w.n, w.bytes(), out, |range, ptr| {
            // SAFETY: features checked by the caller (AVX-VNNI where `vnni`); each task owns
            // its rows.
            unsafe {
                if vnni {
                    rows_vnni::<S, M>(&ctx, range, ptr)
                } else {
                    rows::<S, M>(&ctx, range, ptr)
                }
            }
        }))
    }

    /// `x` quantized per block of 32 to int8 (round to nearest even; `d = max|x| / 127`), 4-bit
    /// codes' rows laid out by [`interleave_nibbles`] (`nibble_chunk`); returns the codes and, per block (`[m, nblk_p]`, zero-padded),
    /// the step `d`, the exact `Σ x` and `d Σ xq`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize_x_avx2(
        x: &[f32],
        m: usize,
        k: usize,
        nblk_p: usize,
        nibble_chunk: usize,
    ) -> (Vec<i8>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let nblk = k / 32;
        let mut xq = vec![0i8; m * k];
        let mut d = vec![0f32; m * nblk_p];
        let mut xb = vec![0f32; m * nblk_p];
        let mut ds = vec![0f32; m * nblk_p];
        let absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for mi in 0..m {
            for b in 0..nblk {
                let p = x.as_ptr().add(mi * k + b * 32);
                let v = [
                    _mm256_loadu_ps(p),
                    _mm256_loadu_ps(p.add(8)),
                    _mm256_loadu_ps(p.add(16)),
                    _mm256_loadu_ps(p.add(24)),
                ];
                let mx = _mm256_max_ps(
                    _mm256_max_ps(_mm256_and_ps(v[0], absm), _mm256_and_ps(v[1], absm)),
                    _mm256_max_ps(_mm256_and_ps(v[2], absm), _mm256_and_ps(v[3], absm)),
                );
                let sm = _mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3]));
                let amax = hmax(mx);
                let db = amax / 127.0;
                let id = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
                let i = [0, 1, 2, 3].map(|j| _mm256_cvtps_epi32(_mm256_mul_ps(v[j], id)));
                let q = _mm256_packs_epi16(
                    _mm256_packs_epi32(i[0], i[1]),
                    _mm256_packs_epi32(i[2], i[3]),
                );
                let q = _mm256_permutevar8x32_epi32(q, order);
                // Σ xq through a multiply by ones (|xq| ≤ 127: no saturation).
                let qs = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(_mm256_set1_epi8(1), q),
                    _mm256_set1_epi16(1),
                );
                let qsum = hsum(_mm256_cvtepi32_ps(qs));
                let o = mi * nblk_p + b;
                d[o] = db;
                xb[o] = hsum(sm);
                ds[o] = db * qsum;
                _mm256_storeu_si256(xq.as_mut_ptr().add(mi * k + b * 32) as *mut __m256i, q);
            }
            interleave_nibbles(&mut xq[mi * k..(mi + 1) * k], nibble_chunk);
        }
        (xq, d, xb, ds)
    }

    use crate::vmath::avx2::hsum;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hmax(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_max_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// 8 scales (or biases) from `p` as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_raw<S: Element>(p: *const S) -> __m256 {
        match S::DTYPE {
            Dtype::F32 => _mm256_loadu_ps(p as *const f32),
            Dtype::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
            Dtype::BF16 => _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
                16,
            )),
            _ => unreachable!("scales are f32, f16 or bf16"),
        }
    }

    /// Values `g0..g0 + 8` of row `r`'s scales (or biases, `[n, groups]` in `all`) as f32,
    /// zeros past the row's end. Short tails (K = 576 has 18 groups of 32) read on into the
    /// next row and clear those lanes: a copy into a scratch array was a `memcpy` call per
    /// row, 5% of SmolLM2's decode time; only the last row's tail still copies.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8<S: Element>(all: &[S], r: usize, groups: usize, g0: usize) -> __m256 {
        let start = r * groups + g0;
        let valid = groups - g0;
        if valid >= 8 {
            load_raw(all.as_ptr().add(start))
        } else if start + 8 <= all.len() {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid as i32), lane);
            _mm256_and_ps(load_raw(all.as_ptr().add(start)), _mm256_castsi256_ps(keep))
        } else {
            let mut t = [S::from_f32(0.0); 8];
            t[..valid].copy_from_slice(&all[start..start + valid]);
            load_raw(t.as_ptr())
        }
    }

    /// Per-group values → per-block lanes (`bpg` blocks per group: 1, 2 or 4).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn expand(v: __m256, bpg: usize) -> __m256 {
        match bpg {
            1 => v,
            2 => _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3)),
            _ => _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1)),
        }
    }

    /// Output rows `range` for `M` rows of `x`; `vnni`: AVX-VNNI's `vpdpbusd` for the integer
    /// dots (the same integer sums: no i16 step saturates).
    macro_rules! rows_kernel {
        ($name:ident, $row:ident, $feat:literal) => {
            #[target_feature(enable = $feat)]
            unsafe fn $name<S: Element, const M: usize>(
                c: &Ctx<S>,
                range: std::ops::Range<usize>,
                out: OutPtr,
            ) {
                let n = c.w.n;
                for r in range {
                    let v = if c.w.bits == 4 {
                        $row::<S, M, true>(c, r)
                    } else {
                        $row::<S, M, false>(c, r)
                    };
                    for (mi, v) in v.iter().enumerate() {
                        // SAFETY: row r belongs to this task; mi < m, r < n.
                        *out.0.add(mi * n + r) = *v;
                    }
                }
            }
        };
    }
    rows_kernel!(rows, row, "avx2,fma,f16c");
    rows_kernel!(rows_vnni, row_vnni, "avx2,fma,f16c,avxvnni");

    macro_rules! row_kernel {
        ($name:ident, $feat:literal, $vnni:literal) => {
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn $name<S: Element, const M: usize, const FOUR: bool>(
                c: &Ctx<S>,
                r: usize,
            ) -> [f32; M] {
                let w = c.w;
                let (k, gs) = (w.k, w.group_size);
                let (groups, nblk, bpg, nblk_p) = (k / gs, k / 32, gs / 32, c.nblk_p);
                let row = (w.wq.as_ptr() as *const u8).add(r * k * if FOUR { 1 } else { 2 } / 2);
                let xq = c.xq.as_ptr();
                let m0f = _mm256_set1_epi8(0x0f);
                let flip = _mm256_set1_epi8(-128);
                let ones = _mm256_set1_epi16(1);
                let mut acc = [_mm256_setzero_ps(); M];
                let mut bacc = [_mm256_setzero_ps(); M];
                let mut b0 = 0;
                while b0 < nblk {
                    let nb = (nblk - b0).min(8);
                    let s8 = expand(load8(w.scales, r, groups, b0 / bpg), bpg);
                    let b8 = expand(load8(w.biases, r, groups, b0 / bpg), bpg);
                    let mut sd = [_mm256_setzero_ps(); M];
                    for mi in 0..M {
                        let o = mi * nblk_p + b0;
                        sd[mi] = _mm256_mul_ps(s8, _mm256_loadu_ps(c.d.as_ptr().add(o)));
                        let e = _mm256_mul_ps(s8, _mm256_loadu_ps(c.eb.as_ptr().add(o)));
                        bacc[mi] =
                            _mm256_fmadd_ps(b8, _mm256_loadu_ps(c.xb.as_ptr().add(o)), bacc[mi]);
                        bacc[mi] = _mm256_add_ps(bacc[mi], e);
                    }
                    // Ask for the codes PREFETCH bytes ahead (the next rows once near a row's end):
                    // more misses in flight than the hardware streamer keeps on its own.
                    let cb = if FOUR { 16 } else { 32 };
                    for l in (0..nb * cb).step_by(64) {
                        _mm_prefetch::<_MM_HINT_T0>(row.add(b0 * cb + l + PREFETCH) as *const i8);
                    }
                    if FOUR {
                        // Pairs of blocks: 32 bytes of codes against 64 x values.
                        for j in 0..nb / 2 {
                            let p = b0 / 2 + j;
                            let v = _mm256_loadu_si256(row.add(p * 32) as *const __m256i);
                            let lo = _mm256_and_si256(v, m0f);
                            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m0f);
                            let pick = _mm256_setr_epi32(
                                2 * j as i32,
                                2 * j as i32,
                                2 * j as i32,
                                2 * j as i32,
                                2 * j as i32 + 1,
                                2 * j as i32 + 1,
                                2 * j as i32 + 1,
                                2 * j as i32 + 1,
                            );
                            for mi in 0..M {
                                let xp = xq.add(mi * k + p * 64);
                                let xe = _mm256_loadu_si256(xp as *const __m256i);
                                let xo = _mm256_loadu_si256(xp.add(32) as *const __m256i);
                                // Each i16 sum ≤ 2·15·127: the two products add without saturating,
                                // so VNNI's i32 sums are the same integers.
                                let p32 = if $vnni {
                                    _mm256_dpbusd_avx_epi32(
                                        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), lo, xe),
                                        hi,
                                        xo,
                                    )
                                } else {
                                    let p16 = _mm256_add_epi16(
                                        _mm256_maddubs_epi16(lo, xe),
                                        _mm256_maddubs_epi16(hi, xo),
                                    );
                                    _mm256_madd_epi16(p16, ones)
                                };
                                let pf = _mm256_cvtepi32_ps(p32);
                                let st = _mm256_permutevar8x32_ps(sd[mi], pick);
                                acc[mi] = _mm256_fmadd_ps(pf, st, acc[mi]);
                            }
                        }
                        if nb % 2 == 1 {
                            // The unpaired last block: 16 bytes, x as 16 evens then 16 odds.
                            let b = b0 + nb - 1;
                            let v = _mm_loadu_si128(row.add(b * 16) as *const __m128i);
                            let low = _mm256_castsi256_si128(m0f);
                            let lo = _mm_and_si128(v, low);
                            let hi = _mm_and_si128(_mm_srli_epi16(v, 4), low);
                            let q = _mm256_set_m128i(hi, lo);
                            let pick = _mm256_set1_epi32(nb as i32 - 1);
                            for mi in 0..M {
                                let xv =
                                    _mm256_loadu_si256(xq.add(mi * k + b * 32) as *const __m256i);
                                let p = if $vnni {
                                    _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), q, xv)
                                } else {
                                    _mm256_madd_epi16(_mm256_maddubs_epi16(q, xv), ones)
                                };
                                let st = _mm256_permutevar8x32_ps(sd[mi], pick);
                                acc[mi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), st, acc[mi]);
                            }
                        }
                    } else {
                        // 8-bit: codes centred at 128 (signed), sign trick for `maddubs` (|q - 128|
                        // unsigned times x carrying q's sign; no i16 overflow).
                        for j in 0..nb {
                            let b = b0 + j;
                            let qs = _mm256_xor_si256(
                                _mm256_loadu_si256(row.add(b * 32) as *const __m256i),
                                flip,
                            );
                            let qa = _mm256_sign_epi8(qs, qs);
                            let pick = _mm256_set1_epi32(j as i32);
                            for mi in 0..M {
                                let xv =
                                    _mm256_loadu_si256(xq.add(mi * k + b * 32) as *const __m256i);
                                // |q - 128| · x pairs ≤ 2·128·127: no i16 saturation, VNNI agrees
                                let xs = _mm256_sign_epi8(xv, qs);
                                let p = if $vnni {
                                    _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), qa, xs)
                                } else {
                                    _mm256_madd_epi16(_mm256_maddubs_epi16(qa, xs), ones)
                                };
                                let st = _mm256_permutevar8x32_ps(sd[mi], pick);
                                acc[mi] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), st, acc[mi]);
                            }
                        }
                    }
                    b0 += 8;
                }
                let mut o = [0f32; M];
                for mi in 0..M {
                    o[mi] = hsum(_mm256_add_ps(acc[mi], bacc[mi]));
                }
                o
            }
        };
    }
    row_kernel!(row, "avx2,fma,f16c", false);
    row_kernel!(row_vnni, "avx2,fma,f16c,avxvnni", true);
}

#[cfg(test)]
mod tests {
    use super::super::pack::{pack_row, quantize_group};
    use super::*;

    /// The weights of one product from `setup`'s parts.
    fn packed<'a, S>(
        wq: &'a [u32],
        scales: &'a [S],
        biases: &'a [S],
        (n, k, group_size, bits): (usize, usize, usize, usize),
    ) -> Packed<'a, S> {
        Packed {
            wq,
            scales,
            biases,
            n,
            k,
            group_size,
            bits,
        }
    }

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

    /// A row whose last 8-group load runs past its end (k = 352: 11 groups of 32) reads the
    /// next row's scales and biases and must clear those lanes: with NaN there, row 0 gives the
    /// same bits as a one-row matrix of it alone.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_short_tail_of_groups_ignores_the_next_rows_scales() {
        let (n, k, gs) = (2, 352, 32);
        for bits in [4, 8] {
            let (wq, s, b, _) = setup(n, k, gs, bits);
            let x: Vec<f32> = (0..k).map(|i| (i * 37 % 101) as f32 / 50.0 - 1.0).collect();
            let groups = k / gs;
            if !int8_supported(&packed(&wq, &s, &b, (n, k, gs, bits))) {
                return;
            }
            let kernels: [unsafe fn(&[f32], usize, &Packed<f32>, &mut [f32]); 2] =
                [avx2::qmv_int8, avx512::qmv_int8];
            for (i, kernel) in kernels.into_iter().enumerate() {
                if i == 1 && !avx512::available() {
                    continue;
                }
                let (mut s, mut b) = (s.clone(), b.clone());
                let one = packed(
                    &wq[..k * bits / 32],
                    &s[..groups],
                    &b[..groups],
                    (1, k, gs, bits),
                );
                let mut alone = [0f32; 1];
                unsafe { kernel(&x, 1, &one, &mut alone) };
                s[groups..].iter_mut().for_each(|v| *v = f32::NAN);
                b[groups..].iter_mut().for_each(|v| *v = f32::NAN);
                let both = packed(&wq, &s, &b, (n, k, gs, bits));
                let mut got = [0f32; 2];
                unsafe { kernel(&x, 1, &both, &mut got) };
                assert_eq!(
                    got[0].to_bits(),
                    alone[0].to_bits(),
                    "kernel {i}, {bits}-bit: {} vs {}",
                    got[0],
                    alone[0]
                );
                assert!(got[1].is_nan());
            }
        }
    }

    #[test]
    fn exact_and_int8_paths_match_f64_reference() {
        // k = 352: an odd number of 32-blocks (the unpaired-block tail of the 4-bit kernel);
        // n = 600, k = 512: large enough to split across threads.
        for (n, k, bits, gs) in [(70, 256), (37, 352), (600, 512)]
            .into_iter()
            .flat_map(|(n, k)| [2, 3, 4, 5, 6, 8].map(move |b| (n, k, b)))
            .flat_map(|(n, k, b)| [32, 64, 128].map(move |g| (n, k, b, g)))
            .filter(|&(_, k, _, g)| k % g == 0)
        {
            {
                let (wq, s, b, deq) = setup(n, k, gs, bits);
                let w = packed(&wq, &s, &b, (n, k, gs, bits));
                // 13 and 32: more rows than decode takes (4-row blocks plus a tail)
                for m in [1, 3, 8, 13, 32] {
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
                            "exact n {n} k {k} bits {bits} gs {gs} m {m}: {g} vs {w}"
                        );
                    }
                    #[cfg(target_arch = "x86_64")]
                    if int8_supported(&w) && m <= 8 {
                        let mut got = vec![0f32; m * n];
                        unsafe { avx2::qmv_int8(&x, m, &w, &mut got) };
                        let mut worst = 0f64;
                        for (g, w) in got.iter().zip(&want) {
                            worst = worst.max((*g as f64 - w).abs() / scale);
                        }
                        eprintln!("int8 path n {n} k {k} bits {bits} gs {gs} m {m}: max error / max output = {worst:.2e}");
                        // Documented accuracy of the int8 path: within 1% of the output scale.
                        assert!(
                            worst <= 1e-2,
                            "int8 bits {bits} gs {gs} m {m}: relative error {worst}"
                        );
                        if avx512::available() {
                            let mut wide = vec![0f32; m * n];
                            unsafe { avx512::qmv_int8(&x, m, &w, &mut wide) };
                            let mut worst = 0f64;
                            for ((v, g), want) in wide.iter().zip(&got).zip(&want) {
                                assert!(
                                    (*v as f64 - want).abs() <= 1e-2 * scale,
                                    "avx512 bits {bits} gs {gs} m {m}: {v} vs {want}"
                                );
                                worst = worst.max((v - g).abs() as f64 / scale);
                            }
                            // The same integer sums; only the float order and the 8-bit
                            // centring's rounding differ from the 256-bit kernel.
                            assert!(
                                worst <= 2e-5,
                                "avx512 vs avx2 bits {bits} gs {gs} m {m}: {worst:.2e}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Where the CPU has AVX-VNNI, its integer dots give the `maddubs` kernel's bits exactly
    /// (4- and 8-bit, every row count, an unpaired 4-bit block).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vnni_dots_equal_the_maddubs_dots() {
        if !std::arch::is_x86_feature_detected!("avxvnni") {
            eprintln!("skipped: no AVX-VNNI");
            return;
        }
        for (bits, gs, k) in [(4, 64, 352), (4, 32, 256), (8, 128, 512), (8, 32, 352)] {
            let n = 90;
            let (wq, s, b, _) = setup(n, k, gs, bits);
            let w = packed(&wq, &s, &b, (n, k, gs, bits));
            for m in 1..=8 {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| (i * 53 % 97) as f32 / 48.0 - 1.0)
                    .collect();
                let (mut a, mut v) = (vec![0f32; m * n], vec![0f32; m * n]);
                // SAFETY: AVX2/FMA/F16C (int8_supported) and AVX-VNNI were detected.
                assert!(int8_supported(&w));
                unsafe {
                    avx2::qmv_int8_with(&x, m, &w, &mut a, false);
                    avx2::qmv_int8_with(&x, m, &w, &mut v, true);
                }
                assert_eq!(a, v, "bits {bits} gs {gs} k {k} m {m}");
            }
        }
    }

    /// The exact path gives each row of x the same bits whether it runs alone or among others
    /// (4-row blocks and the single-row tail sum identically).
    #[test]
    fn exact_path_is_row_invariant() {
        for bits in [3, 4, 8] {
            let (n, k, gs) = (300, 384, 64);
            let (wq, s, b, _) = setup(n, k, gs, bits);
            let w = packed(&wq, &s, &b, (n, k, gs, bits));
            let m = 13;
            let x: Vec<f32> = (0..m * k)
                .map(|i| (i * 29 % 83) as f32 / 41.0 - 1.0)
                .collect();
            let mut all = vec![0f32; m * n];
            qmv_exact(&x, m, &w, &mut all);
            for mi in 0..m {
                let mut one = vec![0f32; n];
                qmv_exact(&x[mi * k..(mi + 1) * k], 1, &w, &mut one);
                assert_eq!(&all[mi * n..(mi + 1) * n], &one[..], "bits {bits} row {mi}");
            }
        }
    }

    /// Half-precision scales (the GGUF and mlx-community layouts) through the int8 path
    /// against the exact path on the same weights.
    #[test]
    fn int8_path_half_scales_match_exact() {
        use rmlx_core::dtype::{bf16, f16};
        fn check<S: Element>(
            wq: &[u32],
            s: &[S],
            b: &[S],
            n: usize,
            k: usize,
            gs: usize,
            bits: usize,
        ) {
            let w = packed(wq, s, b, (n, k, gs, bits));
            if !int8_supported(&w) {
                return;
            }
            for m in [1, 2, 5] {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 53 % 97) as f32 / 48.0 - 1.0) * 0.3)
                    .collect();
                let (mut want, mut got) = (vec![0f32; m * n], vec![0f32; m * n]);
                qmv_exact(&x, m, &w, &mut want);
                qmv(&x, m, &w, false, &mut got);
                let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                let worst = got
                    .iter()
                    .zip(&want)
                    .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
                assert!(
                    worst <= 1e-2 * scale,
                    "{} bits {bits} gs {gs} m {m}: {worst} of {scale}",
                    S::DTYPE
                );
            }
        }
        for (n, k) in [(24, 576), (300, 1536)] {
            for bits in [4, 8] {
                for gs in [32, 64, 128] {
                    if k % gs != 0 {
                        continue;
                    }
                    let (wq, s, b, _) = setup(n, k, gs, bits);
                    let (sh, bh): (Vec<f16>, Vec<f16>) = (
                        s.iter().map(|v| f16::from_f32(*v)).collect(),
                        b.iter().map(|v| f16::from_f32(*v)).collect(),
                    );
                    check(&wq, &sh, &bh, n, k, gs, bits);
                    let (sb, bb): (Vec<bf16>, Vec<bf16>) = (
                        s.iter().map(|v| bf16::from_f32(*v)).collect(),
                        b.iter().map(|v| bf16::from_f32(*v)).collect(),
                    );
                    check(&wq, &sb, &bb, n, k, gs, bits);
                }
            }
        }
    }
}
