//! MLX's affine quantizer, the bit packing, and dequantization.
//!
//! A row of `K` codes is a little-endian, LSB-first bit stream viewed as u32 words (MLX packs
//! 3/5/6-bit codes byte-wise, 8 codes in 3/5 bytes or 4 codes in 3 bytes: the same stream).

use rayon::prelude::*;
use rmlx_core::dtype::Element;

/// Quantizes one group exactly as MLX's CPU kernel (`mlx/backend/cpu/quantized.cpp`), in f32:
/// writes the codes to `q` and returns `(scale, bias)` before rounding to the weight dtype.
pub fn quantize_group(w: &[f32], bits: usize, q: &mut [u8]) -> (f32, f32) {
    let n_bins = ((1u32 << bits) - 1) as f32;
    let (mut wmin, mut wmax) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in w {
        wmax = wmax.max(v);
        wmin = wmin.min(v);
    }
    // The edge with the larger magnitude is represented exactly (q = 0 or q = n_bins), so the
    // scale's sign follows it: negative scales are normal.
    let mask = wmin.abs() > wmax.abs();
    let mut scale = ((wmax - wmin) / n_bins).max(1e-7);
    if !mask {
        scale = -scale;
    }
    let edge = if mask { wmin } else { wmax };
    let q0 = (edge / scale).round_ties_even();
    let mut bias = 0.0f32;
    if q0 != 0.0 {
        scale = edge / q0;
        bias = edge;
    }
    for (qi, &v) in q.iter_mut().zip(w) {
        *qi = ((v - bias) / scale).round_ties_even().clamp(0.0, n_bins) as u8;
    }
    (scale, bias)
}

/// Packs `q` (codes of `bits` bits) into `out` as an LSB-first bit stream; `q.len() * bits`
/// must be a multiple of 32.
pub fn pack_row(q: &[u8], bits: usize, out: &mut [u32]) {
    let (mut acc, mut nb, mut o) = (0u64, 0usize, 0usize);
    for &v in q {
        acc |= (v as u64) << nb;
        nb += bits;
        if nb >= 32 {
            out[o] = acc as u32;
            o += 1;
            acc >>= 32;
            nb -= 32;
        }
    }
    debug_assert_eq!(nb, 0);
}

/// Unpacks `out.len()` codes starting at code `start` of the packed row `w`.
#[inline]
pub fn unpack(w: &[u32], bits: usize, start: usize, out: &mut [u8]) {
    let mask = (1u64 << bits) - 1;
    match bits {
        // Whole bytes / nibbles: no word straddling.
        8 => {
            let bytes: &[u8] = bytemuck::cast_slice(w);
            out.copy_from_slice(&bytes[start..start + out.len()]);
        }
        4 if start.is_multiple_of(2) => {
            let bytes: &[u8] = bytemuck::cast_slice(w);
            let b = &bytes[start / 2..];
            for (i, pair) in out.chunks_mut(2).enumerate() {
                pair[0] = b[i] & 15;
                if pair.len() > 1 {
                    pair[1] = b[i] >> 4;
                }
            }
        }
        _ => {
            let bit = start * bits;
            let mut word = bit / 32;
            let mut acc = (w[word] as u64) >> (bit % 32);
            let mut nb = 32 - bit % 32;
            word += 1;
            for o in out.iter_mut() {
                if nb < bits {
                    acc |= (w[word] as u64) << nb;
                    word += 1;
                    nb += 32;
                }
                *o = (acc & mask) as u8;
                acc >>= bits;
                nb -= bits;
            }
        }
    }
}

/// One of the three outputs of `quantize` for row-major `w: [rows, k]`: `part` 0 → packed
/// u32 words `[rows, k*bits/32]`, 1 → scales, 2 → biases (`[rows, k/group_size]`, dtype `T`).
pub fn quantize_part<T: Element>(
    w: &[T],
    k: usize,
    group_size: usize,
    bits: usize,
    part: u8,
    out: &mut [u8],
) {
    let rows = w.len().checked_div(k).unwrap_or(0);
    let groups = k / group_size;
    let row_out = match part {
        0 => k * bits / 32 * 4,
        _ => groups * std::mem::size_of::<T>(),
    };
    if rows == 0 || row_out == 0 {
        return;
    }
    out.par_chunks_mut(row_out)
        .enumerate()
        .for_each(|(r, dst)| {
            let src = &w[r * k..(r + 1) * k];
            let mut wf = vec![0f32; group_size];
            let mut q = vec![0u8; k];
            let mut sb = Vec::with_capacity(groups);
            for g in 0..groups {
                for (d, s) in wf
                    .iter_mut()
                    .zip(&src[g * group_size..(g + 1) * group_size])
                {
                    *d = s.to_f32();
                }
                sb.push(quantize_group(
                    &wf,
                    bits,
                    &mut q[g * group_size..(g + 1) * group_size],
                ));
            }
            match part {
                0 => pack_row(&q, bits, bytemuck::cast_slice_mut(dst)),
                p => {
                    let dst: &mut [T] = bytemuck::cast_slice_mut(dst);
                    for (d, (s, b)) in dst.iter_mut().zip(sb) {
                        *d = T::from_f32(if p == 1 { s } else { b });
                    }
                }
            }
        });
}

/// `out[r, i] = scale * q + bias` for row-major `wq: [rows, k*bits/32]`, `scales`, `biases`:
/// `[rows, k/group_size]`, rounded as MLX does (half dtypes: product and sum each rounded).
pub fn dequantize_rows<S: Element>(
    wq: &[u32],
    scales: &[S],
    biases: &[S],
    k: usize,
    group_size: usize,
    bits: usize,
    out: &mut [S],
) {
    if k == 0 {
        return;
    }
    let words = k * bits / 32;
    let groups = k / group_size;
    let half = S::DTYPE != rmlx_core::Dtype::F32;
    out.par_chunks_mut(k).enumerate().for_each(|(r, dst)| {
        let mut q = vec![0u8; group_size];
        let w = &wq[r * words..(r + 1) * words];
        for g in 0..groups {
            unpack(w, bits, g * group_size, &mut q);
            let (s, b) = (scales[r * groups + g], biases[r * groups + g]);
            let (sf, bf) = (s.to_f32(), b.to_f32());
            for (d, &qi) in dst[g * group_size..(g + 1) * group_size].iter_mut().zip(&q) {
                *d = if half {
                    S::from_f32(S::from_f32(sf * qi as f32).to_f32() + bf)
                } else {
                    S::from_f32(sf * qi as f32 + bf)
                };
            }
        }
    });
}

/// Dequantizes row `r` of a packed matrix to f32 (`scale * q + bias` in f32), for kernels.
#[inline]
pub fn dequantize_row_f32<S: Element>(
    w: &[u32],
    scales: &[S],
    biases: &[S],
    group_size: usize,
    bits: usize,
    dst: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if (bits == 4 || bits == 8)
        && group_size.is_multiple_of(16)
        && std::arch::is_x86_feature_detected!("avx2")
    {
        // SAFETY: AVX2 was detected just above.
        return unsafe { dequantize_row_f32_avx2(w, scales, biases, group_size, bits, dst) };
    }
    let mut q = [0u8; 128];
    for (g, chunk) in dst.chunks_mut(group_size).enumerate() {
        let q = &mut q[..group_size];
        unpack(w, bits, g * group_size, q);
        let (s, b) = (scales[g].to_f32(), biases[g].to_f32());
        for (d, &qi) in chunk.iter_mut().zip(q.iter()) {
            *d = s * qi as f32 + b;
        }
    }
}

/// [`dequantize_row_f32`] for 4- and 8-bit codes, 16 at a time: the same `s * q + b` (a
/// multiply, then an add: the same bits as the scalar loop), 8 lanes wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dequantize_row_f32_avx2<S: Element>(
    w: &[u32],
    scales: &[S],
    biases: &[S],
    group_size: usize,
    bits: usize,
    dst: &mut [f32],
) {
    use std::arch::x86_64::*;
    let bytes: &[u8] = bytemuck::cast_slice(w);
    let nib = 0x0F0F_0F0F_0F0F_0F0Fu64;
    for (g, chunk) in dst.chunks_exact_mut(group_size).enumerate() {
        let (s, b) = (
            _mm256_set1_ps(scales[g].to_f32()),
            _mm256_set1_ps(biases[g].to_f32()),
        );
        let gb = &bytes[g * group_size * bits / 8..(g + 1) * group_size * bits / 8];
        let per16 = 2 * bits; // bytes of 16 codes
        for (c, d) in gb.chunks_exact(per16).zip(chunk.chunks_exact_mut(16)) {
            let x = if bits == 4 {
                // element 2i is byte i's low nibble, 2i + 1 its high one
                let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                _mm_unpacklo_epi8(
                    _mm_cvtsi64_si128((v & nib) as i64),
                    _mm_cvtsi64_si128(((v >> 4) & nib) as i64),
                )
            } else {
                _mm_loadu_si128(c.as_ptr() as *const __m128i)
            };
            let q0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(x));
            let q1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(x)));
            let p = d.as_mut_ptr();
            _mm256_storeu_ps(p, _mm256_add_ps(_mm256_mul_ps(s, q0), b));
            _mm256_storeu_ps(p.add(8), _mm256_add_ps(_mm256_mul_ps(s, q1), b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 16-wide 4-/8-bit dequantization gives the scalar loop's bits (every group size).
    #[test]
    fn wide_row_dequantization_equals_the_scalar_loop() {
        for bits in [4usize, 8] {
            for gs in [16usize, 32, 64, 128] {
                let k = 256;
                let q: Vec<u8> = (0..k).map(|i| ((i * 11 + 5) % (1 << bits)) as u8).collect();
                let mut w = vec![0u32; k * bits / 32];
                pack_row(&q, bits, &mut w);
                let groups = k / gs;
                let sc: Vec<f32> = (0..groups).map(|g| 0.013 * (g as f32 + 1.7)).collect();
                let bi: Vec<f32> = (0..groups).map(|g| -0.21 + 0.05 * g as f32).collect();
                let mut got = vec![0f32; k];
                dequantize_row_f32(&w, &sc, &bi, gs, bits, &mut got);
                for (i, g) in got.iter().enumerate() {
                    let want = sc[i / gs] * q[i] as f32 + bi[i / gs];
                    assert_eq!(g.to_bits(), want.to_bits(), "bits {bits} gs {gs} [{i}]");
                }
            }
        }
    }

    #[test]
    fn pack_unpack_round_trip_every_width() {
        for bits in [2, 3, 4, 5, 6, 8] {
            let k = 128;
            let q: Vec<u8> = (0..k).map(|i| ((i * 7 + 3) % (1 << bits)) as u8).collect();
            let mut w = vec![0u32; k * bits / 32];
            pack_row(&q, bits, &mut w);
            for start in [0, 16, 32, 48, 96] {
                let mut back = vec![0u8; 32.min(k - start)];
                unpack(&w, bits, start, &mut back);
                assert_eq!(
                    back,
                    q[start..start + back.len()],
                    "bits {bits} start {start}"
                );
            }
        }
    }

    #[test]
    fn four_bit_layout_is_lsb_first() {
        let q: Vec<u8> = (0..8).collect();
        let mut w = [0u32; 1];
        pack_row(&q, 4, &mut w);
        assert_eq!(w[0], 0x7654_3210);
    }

    #[test]
    fn quantize_group_hits_edges() {
        let w: Vec<f32> = (0..32).map(|i| i as f32 / 31.0 - 0.25).collect();
        let mut q = [0u8; 32];
        let (s, b) = quantize_group(&w, 4, &mut q);
        // wmax (0.75) has the larger magnitude: it is the bias, and the scale is negative.
        assert_eq!(b, 0.75);
        assert!(s < 0.0);
        assert_eq!(q[31], 0);
        assert_eq!(q[0], 15);
    }
}
