//! Prefill-shaped quantized matmul (many rows of `x`): compute bound, so a tile of weights is
//! dequantized to f32 once and reused by every row of `x` through the `gemm` crate.

use super::pack::dequantize_row_f32;
use super::qmv::Packed;
use gemm::{gemm, Parallelism};
use rayon::prelude::*;
use rmlx_core::dtype::Element;

/// Bytes of f32 weights dequantized per tile: fits the last-level cache next to `x`'s panel.
const TILE_BYTES: usize = 2 << 20;

/// Longest stretch of K one `gemm` call sums. The crate splits K itself, at 512 for products of
/// at most 64 × 64 and by its cache model otherwise, so one row's sums could run in another
/// order in a 9-row product than in a 512-row one (a prefix-cached suffix against a fresh
/// prompt). Given K in balanced chunks of at most 512, it takes each chunk whole, whatever m
/// and n: a row's result no longer depends on how many rows are multiplied with it.
const K_CHUNK: usize = 512;

/// Long rows (K at least [`WIDE_TILE_MIN_K`]) take tiles of at least this many weight rows, up to
/// [`WIDE_TILE_BYTES`]: `gemm` packs the rows of x again for every tile, and at K = 4,096 a
/// 2 MiB tile is only 128 columns. Measured on the Zen 5 (512×4096×4096, 4-bit): 0.58–0.71 of
/// the f32 GEMM with 128 columns, 0.88 with 1,024 (16 MiB). Shorter rows keep [`TILE_BYTES`]:
/// SmolLM2's prompt (K ≤ 1,536) ran 0.85–0.95× as fast with 1,024 columns.
const WIDE_TILE_COLS: usize = 1024;
const WIDE_TILE_BYTES: usize = 16 << 20;
const WIDE_TILE_MIN_K: usize = 2048;

/// Narrowest weight tile of [`qmm_t`]: 9 rows (the fewest that take this path) × 32 columns
/// stay above the `gemm` crate's 256-output small-product path.
const MIN_TILE_COLS: usize = 32;

/// K in balanced chunks of at most [`K_CHUNK`]: (start, length) pairs.
fn k_chunks(k: usize) -> impl Iterator<Item = (usize, usize)> {
    let len = k.div_ceil(k.div_ceil(K_CHUNK).max(1)).max(1);
    (0..k).step_by(len).map(move |k0| (k0, len.min(k - k0)))
}

/// `out[m, n] (+)= lhs[m, k] @ rhs[k, n]` through `gemm`, K in [`k_chunks`]: `out` and `lhs`
/// row-major with row strides `out_rs` and `lhs_rs`; `rhs[l, j]` at `rhs + l * rhs_rs + j *
/// rhs_cs`. `accumulate`: add to `out` (else it is overwritten).
///
/// # Safety
/// Every addressed element lies inside its allocation, and `out` does not alias the inputs.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_k_chunked(
    (m, n, k): (usize, usize, usize),
    (out, out_rs): (*mut f32, usize),
    (lhs, lhs_rs): (*const f32, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
    accumulate: bool,
) {
    for (k0, kb) in k_chunks(k) {
        let read = accumulate || k0 > 0;
        // SAFETY: the caller's bounds; chunk k0.. of lhs's columns and rhs's rows
        unsafe {
            gemm(
                m,
                n,
                kb,
                out,
                1,
                out_rs as isize,
                read,
                lhs.add(k0),
                1,
                lhs_rs as isize,
                rhs.add(k0 * rhs_rs),
                rhs_cs as isize,
                rhs_rs as isize,
                if read { 1.0 } else { 0.0 },
                1.0,
                false,
                false,
                false,
                Parallelism::Rayon(0),
            );
        }
    }
}

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
    // Tiles of at least MIN_TILE_COLS columns: a narrower one (a short last tile, which then
    // joins the one before it) would take the `gemm` crate's path for products of at most 256
    // outputs, which sums K in another order (horizontally), for a few rows but not for many,
    // so a row's result would depend on the row count.
    let wide = if k >= WIDE_TILE_MIN_K {
        WIDE_TILE_COLS.min(WIDE_TILE_BYTES / 4 / k)
    } else {
        0
    };
    let nt = (TILE_BYTES / 4 / k)
        .max(wide)
        .clamp(MIN_TILE_COLS, n.max(MIN_TILE_COLS))
        .min(n);
    let mut starts: Vec<usize> = (0..n).step_by(nt).collect();
    if starts.len() > 1 && n - starts[starts.len() - 1] < MIN_TILE_COLS {
        starts.pop();
    }
    let mut tile = vec![0f32; (nt + MIN_TILE_COLS).min(n) * k];
    for (t, &n0) in starts.iter().enumerate() {
        let nb = starts.get(t + 1).copied().unwrap_or(n) - n0;
        // tile: [nb, k], row j = dequantized weight row n0 + j.
        dequantize_rows(w, n0, words, groups, &mut tile[..nb * k], k);
        // SAFETY: out[i, n0 + j] (i < m, j < nb), x[i, l] and tile[j, l] (l < k): rhs[l, j] =
        // tile[j, l], row stride 1, column stride k.
        unsafe {
            gemm_k_chunked(
                (m, nb, k),
                (out.as_mut_ptr().add(n0), n),
                (x.as_ptr(), k),
                (tile.as_ptr(), 1, k),
                false,
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
    for t0 in (0..kdim).step_by(kt) {
        let tb = kt.min(kdim - t0);
        dequantize_rows(w, t0, words, groups, &mut tile[..tb * n], n);
        // SAFETY: out[i, j] (i < m, j < n), x[i, t0 + l] (l < tb), tile[l, j]: row stride n,
        // column stride 1.
        unsafe {
            gemm_k_chunked(
                (m, n, tb),
                (out.as_mut_ptr(), n),
                (x.as_ptr().add(t0), kdim),
                (tile.as_ptr(), n, 1),
                t0 > 0,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A row's product is bit-identical whether it is multiplied alone with a few rows or
    /// inside many (the `gemm` crate splits K differently for small products; [`k_chunks`],
    /// and takes another path for at most 256 outputs; [`MIN_TILE_COLS`]), for both layouts,
    /// including n that the old tiling cut into a narrow last tile (n = 960: 910 + 50 columns,
    /// the case that diverged; n = 926: 910 + 16) and K above one chunk. Matrices narrower than
    /// 29 columns still meet the crate's small-product path with 9 rows.
    #[test]
    fn a_rows_product_does_not_depend_on_the_row_count() {
        for (n, k) in [
            (960usize, 576usize),
            (576, 576),
            (3072, 576),
            (576, 1536),
            (40, 1088),
            (926, 576),
            (4097, 8192),
        ] {
            let (gs, bits) = (32usize, 4usize);
            let wq: Vec<u32> = (0..n * k * bits / 32)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761))
                .collect();
            let scales: Vec<f32> = (0..n * k / gs)
                .map(|i| 0.01 + (i % 7) as f32 * 1e-3)
                .collect();
            let biases: Vec<f32> = (0..n * k / gs)
                .map(|i| -0.05 + (i % 5) as f32 * 1e-2)
                .collect();
            let big = 521;
            for transposed in [true, false] {
                // transposed: w [n, k]; else w [k, n] (rows of the product's K)
                let (wn, wk) = if transposed { (n, k) } else { (k, n) };
                let w = Packed {
                    wq: &wq,
                    scales: &scales,
                    biases: &biases,
                    n: wn,
                    k: wk,
                    group_size: gs,
                    bits,
                };
                let x: Vec<f32> = (0..big * k)
                    .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                    .collect();
                let run = |xs: &[f32], m: usize| {
                    let mut out = vec![0f32; m * n];
                    if transposed {
                        qmm_t(xs, m, &w, &mut out);
                    } else {
                        qmm_n(xs, m, &w, &mut out);
                    }
                    out
                };
                let all = run(&x, big);
                let off = big - 9;
                let few = run(&x[off * k..], 9);
                let diff = few
                    .iter()
                    .zip(&all[off * n..])
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(
                    diff, 0,
                    "n {n} k {k} transposed={transposed}: {diff} elements differ"
                );
            }
        }
    }
}
