//! Prefill-shaped quantized matmul (many rows of `x`): compute bound, so a tile of weights is
//! dequantized to f32 once and reused by every row of `x` through the `gemm` crate.

use super::pack::dequantize_row_f32;
use super::qmv::Packed;
use gemm::{gemm, Parallelism};
use rayon::prelude::*;
use rmlx_core::dtype::Element;

/// Bytes of f32 weights dequantized per tile: fits the last-level cache next to `x`'s panel.
const TILE_BYTES: usize = 2 << 20;

/// `out[m, n] = x[m, k] @ w[n, k]^T` for transposed packed weights `w: [n, k]`.
pub fn qmm_t<S: Element>(x: &[f32], m: usize, w: &Packed<S>, out: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let words = k * w.bits / 32;
    let groups = k / w.group_size;
    let nt = (TILE_BYTES / 4 / k).clamp(16, n.max(16)).min(n);
    let mut tile = vec![0f32; nt * k];
    for n0 in (0..n).step_by(nt) {
        let nb = nt.min(n - n0);
        // tile: [nb, k], row j = dequantized weight row n0 + j.
        dequantize_rows(w, n0, words, groups, &mut tile[..nb * k], k);
        // SAFETY: every pointer/stride pair addresses inside its slice: out[i, n0 + j]
        // (i < m, j < nb), x[i, l] (l < k), tile[j, l].
        unsafe {
            gemm(
                m,
                nb,
                k,
                out.as_mut_ptr().add(n0),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                tile.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::Rayon(0),
            );
        }
    }
}

/// `out[m, n] = x[m, k] @ w[k, n]` for non-transposed packed weights (`w.n` rows of length
/// `w.k` are the `K` rows of the product; groups run along the output axis).
pub fn qmm_n<S: Element>(x: &[f32], m: usize, w: &Packed<S>, out: &mut [f32]) {
    // Here w.n = K (rows) and w.k = N (packed row length).
    let (kdim, n) = (w.n, w.k);
    if m == 0 || n == 0 {
        return;
    }
    out.fill(0.0);
    if kdim == 0 {
        return;
    }
    let words = n * w.bits / 32;
    let groups = n / w.group_size;
    let kt = (TILE_BYTES / 4 / n).clamp(16, kdim.max(16)).min(kdim);
    let mut tile = vec![0f32; kt * n];
    for k0 in (0..kdim).step_by(kt) {
        let kb = kt.min(kdim - k0);
        dequantize_rows(w, k0, words, groups, &mut tile[..kb * n], n);
        // SAFETY: out[i, j] (i < m, j < n), x[i, k0 + l] (l < kb), tile[l, j].
        unsafe {
            gemm(
                m,
                n,
                kb,
                out.as_mut_ptr(),
                1,
                n as isize,
                k0 > 0,
                x.as_ptr().add(k0),
                1,
                kdim as isize,
                tile.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::Rayon(0),
            );
        }
    }
}

/// Plain f32 `out[m, n] = x[m, k] @ w[n, k]^T` through the same `gemm` crate (the reference
/// the prefill kernel is measured against).
pub fn sgemm_nt(x: &[f32], m: usize, w: &[f32], n: usize, k: usize, out: &mut [f32]) {
    assert!(
        x.len() >= m * k && w.len() >= n * k && out.len() >= m * n,
        "sgemm_nt: slices too short"
    );
    // SAFETY: bounds checked above; out[i, j], x[i, l], w[j, l].
    unsafe {
        gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::Rayon(0),
        );
    }
}

/// Dequantizes packed rows `r0..` of `w` into `tile` (row length `len`), one task per row:
/// the tile both prefill layouts multiply with the f32 GEMM.
fn dequantize_rows<S: Element>(
    w: &Packed<S>,
    r0: usize,
    words: usize,
    groups: usize,
    tile: &mut [f32],
    len: usize,
) {
    tile.par_chunks_mut(len).enumerate().for_each(|(j, dst)| {
        let r = r0 + j;
        dequantize_row_f32(
            &w.wq[r * words..(r + 1) * words],
            &w.scales[r * groups..(r + 1) * groups],
            &w.biases[r * groups..(r + 1) * groups],
            w.group_size,
            w.bits,
            dst,
        );
    });
}
