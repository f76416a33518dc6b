//! Lossless import of GGUF quantized blocks into MLX affine quantization.
//!
//! Every GGUF block type below dequantizes as `w = s * q + b` per group of consecutive elements
//! of a row, with an unsigned integer `q`, so it maps onto MLX's format (`wq` packed LSB-first
//! into u32 words, `scales`/`biases` per group) with no loss:
//!
//! | type | bits | group | scale | bias | scales/biases dtype |
//! |---|---|---|---|---|---|
//! | Q4_0 | 4 | 32 | `d` | `-8d` | f16 (f32 if `-8d` overflows f16) |
//! | Q4_1 | 4 | 32 | `d` | `m` | f16 |
//! | Q5_0 | 5 | 32 | `d` | `-16d` | f16 (f32 on overflow) |
//! | Q5_1 | 5 | 32 | `d` | `m` | f16 |
//! | Q8_0 | 8 | 32 | `d` (q+128) | `-128d` | f16 (f32 on overflow) |
//! | Q2_K | 2 | 16 | `d*(sc&15)` | `-dmin*(sc>>4)` | f32 |
//! | Q3_K | 3 | 16 | `d*(sc-32)` | `-4*d*(sc-32)` | f32 |
//! | Q4_K / Q5_K | 4 / 5 | 32 | `d*sc` | `-dmin*m` | f32 |
//! | Q6_K | 6 | 16 | `d*sc` | `-32*d*sc` | f32 |
//!
//! Why f32 for K-quants: `d` is f16 (11 significant bits) and `sc` has 4 to 8 bits, so `d*sc`
//! needs up to 18 bits and would round in f16; in f32 it is exact. For the legacy types `d` and
//! `m` are f16 already and `-8d`, `-16d`, `-128d` are exact in f16 unless they overflow, which
//! is checked per tensor. Every product `s*q` is exact in f32 (at most 24 significant bits), so
//! `s*q + b` computed in f32 reproduces gguf's own dequantization (`dl*q - ml` or `d*(q-off)`)
//! bit for bit.

use super::types::GgmlType;
use crate::file::{host_bytes, host_f32};
use rayon::prelude::*;
use rmlx_core::shape::fmt_shape;
use rmlx_core::{f16, Array, ArrayData, Buffer, Dtype, Result};
use std::sync::Arc;

/// A loaded GGUF tensor.
#[derive(Clone, Debug)]
pub enum Tensor {
    /// A plain array (F32, F16, BF16, I32, I64 tensors), zero-copy over the file mapping.
    Dense(Array),
    /// MLX affine quantization: `w[n, k] = scales[n, k / g] * q[n, k] + biases[n, k / g]`,
    /// `q` packed LSB-first into u32 words along the row.
    Quantized {
        /// `[..., N, K * bits / 32]` u32.
        wq: Array,
        /// `[..., N, K / group_size]`, f16 or f32 (see the module docs).
        scales: Array,
        /// Same shape and dtype as `scales`.
        biases: Array,
        /// 16 or 32.
        group_size: usize,
        /// 2, 3, 4, 5, 6 or 8.
        bits: usize,
    },
}

impl Tensor {
    /// The logical (dequantized) shape.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Tensor::Dense(a) => a.shape().to_vec(),
            Tensor::Quantized { wq, bits, .. } => {
                let mut s = wq.shape().to_vec();
                if let Some(last) = s.last_mut() {
                    // `last` = k / 32 * bits (k is whole blocks of 32 or 256): no overflow.
                    *last = *last / bits * 32;
                }
                s
            }
        }
    }

    /// The values as f32 in row-major order, dequantized in plain scalar Rust as
    /// `scale * q + bias` (a reference, not a fast path: kernels use `ops::dequantize`).
    /// Float dense tensors convert on the host; no backend is needed.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        match self {
            Tensor::Dense(a) => host_f32(a),
            Tensor::Quantized {
                wq,
                scales,
                biases,
                group_size,
                bits,
            } => {
                let words: Vec<u32> = host_bytes(wq)?
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                let (s, b) = (host_f32(scales)?, host_f32(biases)?);
                let n = words.len() * 32 / bits;
                let mask = (1u64 << bits) - 1;
                Ok((0..n)
                    .map(|i| {
                        let bit = i * bits;
                        let lo = words[bit / 32] as u64;
                        let hi = words.get(bit / 32 + 1).copied().unwrap_or(0) as u64;
                        let q = (((hi << 32) | lo) >> (bit % 32)) & mask;
                        let g = i / group_size;
                        s[g] * q as f32 + b[g]
                    })
                    .collect())
            }
        }
    }
}

fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Decodes one block: `q` gets the unsigned levels, `s`/`m` the scale and bias of each group.
fn decode(t: GgmlType, b: &[u8], q: &mut [u8], s: &mut [f32], m: &mut [f32]) {
    match t {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (d, qs) = (
                h(b, 0),
                if t == GgmlType::Q4_0 {
                    &b[2..18]
                } else {
                    &b[4..20]
                },
            );
            for j in 0..16 {
                q[j] = qs[j] & 0xF;
                q[j + 16] = qs[j] >> 4;
            }
            s[0] = d;
            m[0] = if t == GgmlType::Q4_0 {
                -8.0 * d
            } else {
                h(b, 2)
            };
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let at = if t == GgmlType::Q5_0 { 2 } else { 4 };
            let qh = u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
            let qs = &b[at + 4..at + 20];
            for j in 0..16 {
                q[j] = (qs[j] & 0xF) | ((((qh >> j) & 1) as u8) << 4);
                q[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
            }
            let d = h(b, 0);
            s[0] = d;
            m[0] = if t == GgmlType::Q5_0 {
                -16.0 * d
            } else {
                h(b, 2)
            };
        }
        GgmlType::Q8_0 => {
            for j in 0..32 {
                q[j] = (b[2 + j] as i8 as i16 + 128) as u8;
            }
            let d = h(b, 0);
            s[0] = d;
            m[0] = -128.0 * d;
        }
        GgmlType::Q2_K => {
            // scales[16] | qs[64] | d | dmin
            let (sc, qs, d, dmin) = (&b[0..16], &b[16..80], h(b, 80), h(b, 82));
            for (e, qe) in q.iter_mut().enumerate() {
                let (half, j, l) = (e / 128, (e % 128) / 32, e % 32);
                *qe = (qs[half * 32 + l] >> (2 * j)) & 3;
            }
            for g in 0..16 {
                s[g] = d * (sc[g] & 0xF) as f32;
                m[g] = -(dmin * (sc[g] >> 4) as f32);
            }
        }
        GgmlType::Q3_K => {
            // hmask[32] | qs[64] | scales[12] | d; value = dl * (low2 | hbit << 2) - 4 dl.
            let (hm, qs, sc, d) = (&b[0..32], &b[32..96], &b[96..108], h(b, 108));
            for (e, qe) in q.iter_mut().enumerate() {
                let (half, j, l) = (e / 128, (e % 128) / 32, e % 32);
                let low = (qs[half * 32 + l] >> (2 * j)) & 3;
                let hbit = (hm[l] >> (e / 32)) & 1;
                *qe = low | (hbit << 2);
            }
            for g in 0..16 {
                let lo = if g < 8 { sc[g] & 0xF } else { sc[g - 8] >> 4 };
                let hi = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
                let dl = d * ((lo | (hi << 4)) as i32 - 32) as f32;
                s[g] = dl;
                m[g] = -4.0 * dl;
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            // d | dmin | scales[12] | (Q5_K: qh[32]) | qs[128]
            let (d, dmin, sc) = (h(b, 0), h(b, 2), &b[4..16]);
            let (qh, qs) = if t == GgmlType::Q4_K {
                (None, &b[16..144])
            } else {
                (Some(&b[16..48]), &b[48..176])
            };
            for (e, qe) in q.iter_mut().enumerate() {
                let (c, sub, l) = (e / 64, (e % 64) / 32, e % 32);
                let low = (qs[c * 32 + l] >> (4 * sub)) & 0xF;
                *qe = low | qh.map_or(0, |qh| ((qh[l] >> (e / 32)) & 1) << 4);
            }
            for g in 0..8 {
                let (scale, min) = if g < 4 {
                    (sc[g] & 63, sc[g + 4] & 63)
                } else {
                    (
                        (sc[g + 4] & 0xF) | ((sc[g - 4] >> 6) << 4),
                        (sc[g + 4] >> 4) | ((sc[g] >> 6) << 4),
                    )
                };
                s[g] = d * scale as f32;
                m[g] = -(dmin * min as f32);
            }
        }
        GgmlType::Q6_K => {
            // ql[128] | qh[64] | scales[16] (i8) | d
            let (ql, qh, sc, d) = (&b[0..128], &b[128..192], &b[192..208], h(b, 208));
            for (e, qe) in q.iter_mut().enumerate() {
                let (half, r) = (e / 128, e % 128);
                let low = (ql[half * 64 + r % 64] >> (4 * (r / 64))) & 0xF;
                let hi = (qh[half * 32 + r % 32] >> (2 * (r / 32))) & 3;
                *qe = low | (hi << 4);
            }
            for g in 0..16 {
                let dl = d * (sc[g] as i8) as f32;
                s[g] = dl;
                m[g] = -32.0 * dl;
            }
        }
        _ => unreachable!("import() only passes affine types"),
    }
}

/// Packs `bits`-bit levels LSB-first into u32 words (MLX's layout).
fn pack(q: &[u8], bits: usize, out: &mut [u32]) {
    // whole words of 4- or 8-bit levels (most imports): no carries, one word at a time
    if bits == 4 || bits == 8 {
        let per = 32 / bits;
        for (w, lv) in out.iter_mut().zip(q.chunks_exact(per)) {
            *w |= lv
                .iter()
                .enumerate()
                .fold(0u32, |a, (j, &v)| a | (v as u32) << (j * bits));
        }
        return;
    }
    for (i, &v) in q.iter().enumerate() {
        let (bit, v) = (i * bits, v as u32);
        let (w, off) = (bit / 32, bit % 32);
        out[w] |= v << off;
        if off + bits > 32 {
            out[w + 1] |= v >> (32 - off);
        }
    }
}

/// Whether every value survives a round trip through f16 exactly.
fn exact_in_f16(v: &[f32]) -> bool {
    v.iter()
        .all(|&x| f16::from_f32(x).to_f32().to_bits() == x.to_bits())
}

/// An affine type's bits, group size, elements per block and bytes per block.
fn affine_params(t: GgmlType) -> (usize, usize, usize, usize) {
    let (bs, ts) = t.block().expect("known type");
    (
        t.affine_bits().expect("affine type"),
        t.affine_group().expect("affine type"),
        bs,
        ts,
    )
}

/// Imports the blocks of one tensor (`data`: rows of blocks, `shape` in rmlx order).
pub(super) fn import(
    name: &str,
    t: GgmlType,
    data: &[u8],
    shape: &[usize],
) -> std::result::Result<Tensor, String> {
    let (bits, group, bs, ts) = affine_params(t);
    let k = *shape
        .last()
        .ok_or_else(|| format!("'{name}' has no dimensions"))?;
    if k % bs != 0 {
        return Err(format!(
            "rows of {k} elements are not whole {t} blocks of {bs}"
        ));
    }
    // Checked throughout: with a zero dimension elsewhere, a corrupt `k` can be anything.
    let too_large = || format!("shape {} is too large", fmt_shape(shape));
    let rows = shape[..shape.len() - 1]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(too_large)?;
    // k is whole blocks of 32 or 256 elements, so k / 32 * bits is exact and cannot overflow.
    let (wpr, gpr) = (k / 32 * bits, k / group);
    let row_bytes = (k / bs).checked_mul(ts).ok_or_else(too_large)?;
    if rows.checked_mul(row_bytes) != Some(data.len()) {
        return Err(format!(
            "{} bytes do not hold {rows} rows of {row_bytes} bytes of {t}",
            data.len()
        ));
    }
    // Outputs are allocated only when there are rows to decode; then `rows * row_bytes` is the
    // data's length, so they are bounded by a small multiple of the bytes in the file (the
    // levels and per-group scales of a block take at most 4x its bytes).
    let mut qshape = shape.to_vec();
    let mut gshape = shape.to_vec();
    *qshape.last_mut().expect("ndim >= 1") = wpr;
    *gshape.last_mut().expect("ndim >= 1") = gpr;
    let k_quant = bs == 256;
    if rows == 0 || k == 0 {
        let sdtype = if k_quant { Dtype::F32 } else { Dtype::F16 };
        let empty = |shape: &[usize], dtype| {
            Array::from_bytes(&[], shape, dtype).map_err(|e| e.to_string())
        };
        return Ok(Tensor::Quantized {
            wq: empty(&qshape, Dtype::U32)?,
            scales: empty(&gshape, sdtype)?,
            biases: empty(&gshape, sdtype)?,
            group_size: group,
            bits,
        });
    }
    let b = Blocks {
        t,
        data,
        rows,
        k,
        qshape: &qshape,
        gshape: &gshape,
    };
    if let Some(t) = import_legacy(&b)? {
        return Ok(t);
    }
    import_blocks(&b)
}

/// One tensor's checked blocks: `rows` rows of `k` elements, and the shapes of its packed
/// words (`qshape`) and of its scales and biases (`gshape`).
struct Blocks<'a> {
    t: GgmlType,
    data: &'a [u8],
    rows: usize,
    k: usize,
    qshape: &'a [usize],
    gshape: &'a [usize],
}

/// The general import: each block decoded to levels and f32 groups, then packed; scales and
/// biases become f16 where every value is exact in f16 (legacy types only).
fn import_blocks(b: &Blocks) -> std::result::Result<Tensor, String> {
    let (bits, group, bs, ts) = affine_params(b.t);
    let (wpr, gpr, row_bytes) = (b.k / 32 * bits, b.k / group, b.k / bs * ts);
    let k_quant = bs == 256;
    let mut wq = vec![0u32; b.rows * wpr];
    let mut scales = vec![0f32; b.rows * gpr];
    let mut biases = vec![0f32; b.rows * gpr];
    let per_block_groups = bs / group;
    b.data
        .par_chunks(row_bytes)
        .zip(wq.par_chunks_mut(wpr))
        .zip(scales.par_chunks_mut(gpr).zip(biases.par_chunks_mut(gpr)))
        .for_each_init(
            || vec![0u8; b.k],
            |q, ((src, wrow), (srow, brow))| {
                for (i, blk) in src.chunks_exact(ts).enumerate() {
                    let gs = i * per_block_groups..(i + 1) * per_block_groups;
                    decode(
                        b.t,
                        blk,
                        &mut q[i * bs..(i + 1) * bs],
                        &mut srow[gs.clone()],
                        &mut brow[gs],
                    );
                }
                pack(q, bits, wrow);
            },
        );
    let (scales, biases) = if !k_quant && exact_in_f16(&scales) && exact_in_f16(&biases) {
        let to16 = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
        (
            arr(&to16(&scales), b.gshape)?,
            arr(&to16(&biases), b.gshape)?,
        )
    } else {
        (arr(&scales, b.gshape)?, arr(&biases, b.gshape)?)
    };
    Ok(Tensor::Quantized {
        wq: arr(&wq, b.qshape)?,
        scales,
        biases,
        group_size: group,
        bits,
    })
}

/// MLX's four words for the 32 4-bit levels of a Q4_0/Q4_1 block: GGUF keeps level `j` in the
/// low nibble of byte `j` and level `j + 16` in its high nibble; MLX wants level `i` at bits
/// `4 * (i % 8)` of word `i / 8`.
fn q4_words(qs: &[u8]) -> [u32; 4] {
    // `x` holds a level in the low nibble of each byte; gather the 8 nibbles into one word
    let squeeze = |x: u64| {
        let x = (x | x >> 4) & 0x00FF_00FF_00FF_00FF;
        let x = (x | x >> 8) & 0x0000_FFFF_0000_FFFF;
        ((x | x >> 16) & 0xFFFF_FFFF) as u32
    };
    let lo = u64::from_le_bytes(qs[..8].try_into().expect("8 bytes"));
    let hi = u64::from_le_bytes(qs[8..16].try_into().expect("8 bytes"));
    const LOW: u64 = 0x0F0F_0F0F_0F0F_0F0F;
    [
        squeeze(lo & LOW),
        squeeze(hi & LOW),
        squeeze((lo >> 4) & LOW),
        squeeze((hi >> 4) & LOW),
    ]
}

/// The fast import of the legacy types whose groups already carry f16 numbers (Q4_0, Q4_1,
/// Q8_0): blocks go straight into MLX's words and f16 scales/biases, written once into the
/// arrays' own buffers, in parallel over rows. The same values as the general path (tested);
/// `None` for other types, and where a bias `-8d` / `-128d` overflows f16 (the general path
/// then keeps f32).
fn import_legacy(b: &Blocks) -> std::result::Result<Option<Tensor>, String> {
    if !matches!(b.t, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0) {
        return Ok(None);
    }
    let (bits, _, _, ts) = affine_params(b.t);
    let (rows, nb) = (b.rows, b.k / 32);
    let alloc = |len: usize| Buffer::alloc_for_overwrite(len).map_err(|e| e.to_string());
    let (mut wq, mut sc, mut bi) = (
        alloc(rows * nb * bits * 4)?,
        alloc(rows * nb * 2)?,
        alloc(rows * nb * 2)?,
    );
    // the bias of a block as f16, when exact (`c * d` is exact in f16 unless it overflows)
    let scaled = |d: f16, c: f32| {
        let bias = f16::from_f32(-c * d.to_f32());
        bias.is_finite().then_some(bias)
    };
    let exact = b
        .data
        .par_chunks(nb * ts)
        .zip(wq.as_mut_slice().par_chunks_mut(nb * bits * 4))
        .zip(
            sc.as_mut_slice()
                .par_chunks_mut(nb * 2)
                .zip(bi.as_mut_slice().par_chunks_mut(nb * 2)),
        )
        .all(|((src, wrow), (srow, brow))| {
            for (i, blk) in src.chunks_exact(ts).enumerate() {
                let d = f16::from_le_bytes([blk[0], blk[1]]);
                let (bias, qs) = match b.t {
                    GgmlType::Q4_0 => (scaled(d, 8.0), &blk[2..18]),
                    GgmlType::Q4_1 => (Some(f16::from_le_bytes([blk[2], blk[3]])), &blk[4..20]),
                    _ => (scaled(d, 128.0), &blk[2..34]),
                };
                let Some(bias) = bias else { return false };
                srow[2 * i..2 * i + 2].copy_from_slice(&d.to_le_bytes());
                brow[2 * i..2 * i + 2].copy_from_slice(&bias.to_le_bytes());
                let out = &mut wrow[i * bits * 4..(i + 1) * bits * 4];
                if bits == 4 {
                    for (o, w) in out.chunks_exact_mut(4).zip(q4_words(qs)) {
                        o.copy_from_slice(&w.to_le_bytes());
                    }
                } else {
                    // signed levels q to unsigned q + 128: flip the top bit
                    for (o, &q) in out.iter_mut().zip(qs) {
                        *o = q ^ 0x80;
                    }
                }
            }
            true
        });
    if !exact {
        return Ok(None);
    }
    let array = |buf: Buffer, shape: &[usize], dtype| {
        Array::from_data(ArrayData::contiguous(Arc::new(buf), shape, dtype))
    };
    Ok(Some(Tensor::Quantized {
        wq: array(wq, b.qshape, Dtype::U32),
        scales: array(sc, b.gshape, Dtype::F16),
        biases: array(bi, b.gshape, Dtype::F16),
        group_size: 32,
        bits,
    }))
}

fn arr<T: rmlx_core::Element>(v: &[T], shape: &[usize]) -> std::result::Result<Array, String> {
    debug_assert!(T::DTYPE != Dtype::Bool);
    Array::from_slice(v, shape).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole-word path for 4- and 8-bit levels puts level i at bits [i*bits, (i+1)*bits).
    #[test]
    fn pack_whole_words_places_each_level() {
        for bits in [4usize, 8] {
            let q: Vec<u8> = (0..64).map(|i| ((i * 7 + 3) % (1 << bits)) as u8).collect();
            let mut out = vec![0u32; 64 * bits / 32];
            pack(&q, bits, &mut out);
            for (i, &want) in q.iter().enumerate() {
                let bit = i * bits;
                let got = (out[bit / 32] >> (bit % 32)) & ((1u32 << bits) - 1);
                assert_eq!(got, want as u32, "bits {bits} level {i}");
            }
        }
    }

    #[test]
    fn pack_crosses_word_boundaries() {
        // 3-bit levels 0..7 repeated: element 10 straddles bits 30..33.
        let q: Vec<u8> = (0..32).map(|i| (i % 8) as u8).collect();
        let mut out = vec![0u32; 3];
        pack(&q, 3, &mut out);
        for (i, &want) in q.iter().enumerate() {
            let bit = i * 3;
            let two = (out[bit / 32] as u64)
                | ((out.get(bit / 32 + 1).copied().unwrap_or(0) as u64) << 32);
            assert_eq!(((two >> (bit % 32)) & 7) as u8, want, "element {i}");
        }
    }

    /// The fast legacy import writes the same words, scales and biases (bytes and dtypes) as
    /// the general path, for random blocks of Q4_0, Q4_1 and Q8_0.
    #[test]
    fn legacy_fast_import_equals_the_general_path() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for t in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let ts = t.block().unwrap().1;
            let (rows, k) = (5, 96);
            let mut data: Vec<u8> = (0..rows * k / 32 * ts).map(|_| next() as u8).collect();
            // finite f16 scales and mins (random bytes would give NaN and infinity too)
            for blk in data.chunks_exact_mut(ts) {
                let d = f16::from_f32((next() % 2000) as f32 / 997.0 - 1.0);
                blk[..2].copy_from_slice(&d.to_le_bytes());
                if t == GgmlType::Q4_1 {
                    let m = f16::from_f32((next() % 2000) as f32 / 991.0 - 1.0);
                    blk[2..4].copy_from_slice(&m.to_le_bytes());
                }
            }
            let (qshape, gshape) = (
                [rows, k / 32 * 4 * (t.affine_bits().unwrap() / 4)],
                [rows, k / 32],
            );
            let b = Blocks {
                t,
                data: &data,
                rows,
                k,
                qshape: &qshape,
                gshape: &gshape,
            };
            let fast = import_legacy(&b).unwrap().unwrap();
            let general = import_blocks(&b).unwrap();
            let parts = |x: &Tensor| match x {
                Tensor::Quantized {
                    wq, scales, biases, ..
                } => [wq.clone(), scales.clone(), biases.clone()],
                Tensor::Dense(_) => panic!("quantized"),
            };
            for (a, b) in parts(&fast).iter().zip(parts(&general).iter()) {
                assert_eq!((a.shape(), a.dtype()), (b.shape(), b.dtype()), "{t}");
                assert_eq!(host_bytes(a).unwrap(), host_bytes(b).unwrap(), "{t}");
            }
        }
    }

    #[test]
    fn q4_0_overflowing_bias_stays_f32() {
        // d = 10000 (f16): -8d = -80000 is not representable in f16.
        let mut blk = vec![0u8; 18];
        blk[..2].copy_from_slice(&f16::from_f32(10000.0).to_le_bytes());
        let t = import("w", GgmlType::Q4_0, &blk, &[1, 32]).unwrap();
        let Tensor::Quantized { scales, biases, .. } = &t else {
            panic!("quantized")
        };
        assert_eq!((scales.dtype(), biases.dtype()), (Dtype::F32, Dtype::F32));
        assert_eq!(t.to_f32_vec().unwrap()[0], -80000.0);
        let mut ok = blk.clone();
        ok[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        let Tensor::Quantized { scales, .. } = import("w", GgmlType::Q4_0, &ok, &[1, 32]).unwrap()
        else {
            panic!("quantized")
        };
        assert_eq!(scales.dtype(), Dtype::F16);
    }
}
