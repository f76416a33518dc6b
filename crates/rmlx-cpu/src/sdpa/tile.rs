//! One block of keys against a task's query rows, as two small register-tiled products: the
//! block's K and V rows are widened to f32 once per task and block (not once per query row),
//! K transposed so that `scores = q · Kᵀ` and `acc += p · V` are plain FMA streams with no
//! horizontal sums.
//!
//! Each output element is one fixed sequence of FMAs (over `d` for a score, over the block's
//! keys for an accumulator), whatever the number of rows in the task: a query row's result
//! does not depend on which other rows share its task (the prefix cache relies on it).

use super::simd::KvElem;

/// Keys per column tile of the score kernel (two 8-lane vectors).
const KT: usize = 16;
/// Query rows per register tile.
const RT: usize = 4;

/// A block of keys and values widened to f32: `kt: [d, kbp]` (K transposed, columns past the
/// block's `kb` keys zero), `vf: [kb, dv]`.
#[derive(Default)]
pub struct KvBlock {
    kt: Vec<f32>,
    vf: Vec<f32>,
    row: Vec<f32>,
    kb: usize,
    kbp: usize,
}

impl KvBlock {
    /// Loads `kb` keys and values: `k_row(j)` / `v_row(j)` give key `j`'s rows (`d` / `dv`
    /// elements).
    pub fn load<'a, T: KvElem + 'a>(
        &mut self,
        kb: usize,
        d: usize,
        dv: usize,
        k_row: impl Fn(usize) -> &'a [T],
        v_row: impl Fn(usize) -> &'a [T],
    ) {
        let kbp = kb.next_multiple_of(KT);
        self.kt.clear();
        self.kt.resize(d * kbp, 0.0);
        self.vf.resize(kb * dv, 0.0);
        self.row.resize(d, 0.0);
        for j in 0..kb {
            T::widen(&mut self.row, &k_row(j)[..d]);
            for (dd, &x) in self.row.iter().enumerate() {
                self.kt[dd * kbp + j] = x;
            }
            T::widen(&mut self.vf[j * dv..(j + 1) * dv], &v_row(j)[..dv]);
        }
        self.kb = kb;
        self.kbp = kbp;
    }

    /// `sc[r * stride + j] = q_r · k_j` for the `rows` rows of `qf: [rows, d]` and every key of
    /// the block (also the zero-padded columns up to a multiple of 16: `stride >= kbp`).
    pub fn scores(&self, qf: &[f32], rows: usize, d: usize, sc: &mut [f32], stride: usize) {
        debug_assert!(stride >= self.kbp && qf.len() >= rows * d);
        let (q, kt) = ((qf, d), (&self.kt[..], self.kbp));
        product(q, kt, (sc, stride), (rows, d, self.kbp), false);
    }

    /// `acc[r] += Σ_j p[r * stride + j] · v_j` over the block's keys, for `rows` rows of
    /// `acc: [rows, dv]`.
    pub fn accumulate(&self, p: &[f32], stride: usize, rows: usize, dv: usize, acc: &mut [f32]) {
        debug_assert!(acc.len() >= rows * dv && p.len() >= (rows - 1) * stride + self.kb);
        let vf = (&self.vf[..], dv);
        product((p, stride), vf, (acc, dv), (rows, self.kb, dv), true);
    }
}

/// `c[r * ldc + j] = (add ? c[r * ldc + j] : 0) + Σ_{t < n} a[r * lda + t] · b[t * ldb + j]` for
/// `rows` rows and `cols` columns: the block products of both steps of attention (operands
/// given as (elements, row stride)). Each element is one FMA chain over `t` in order.
fn product(
    (a, lda): (&[f32], usize),
    (b, ldb): (&[f32], usize),
    (c, ldc): (&mut [f32], usize),
    (rows, n, cols): (usize, usize, usize),
    add: bool,
) {
    if rows == 0 {
        return;
    }
    assert!(
        a.len() >= (rows - 1) * lda + n
            && (n == 0 || b.len() >= (n - 1) * ldb + cols)
            && c.len() >= (rows - 1) * ldc + cols
    );
    #[cfg(target_arch = "x86_64")]
    if super::simd::avx2_fma() && cols.is_multiple_of(KT) {
        let p = x86::Product {
            a: a.as_ptr(),
            lda,
            b: b.as_ptr(),
            ldb,
            c: c.as_mut_ptr(),
            ldc,
            n,
            cols,
            add,
        };
        // SAFETY: AVX2 and FMA were detected at run time; the extents were asserted above.
        return unsafe { x86::product(p, rows) };
    }
    for r in 0..rows {
        for j in 0..cols {
            let mut s = if add { c[r * ldc + j] } else { 0.0 };
            for t in 0..n {
                s = a[r * lda + t].mul_add(b[t * ldb + j], s);
            }
            c[r * ldc + j] = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{KT, RT};
    use std::arch::x86_64::*;

    /// The operands of [`super::product`] as raw row-major views.
    #[derive(Clone, Copy)]
    pub struct Product {
        pub a: *const f32,
        pub lda: usize,
        pub b: *const f32,
        pub ldb: usize,
        pub c: *mut f32,
        pub ldc: usize,
        pub n: usize,
        pub cols: usize,
        pub add: bool,
    }

    /// # Safety
    /// AVX2 and FMA; the views hold `rows` rows of `a` and `c`, `n` rows of `b`, and `cols`
    /// (a multiple of 16) columns of `b` and `c`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn product(p: Product, rows: usize) {
        // row tiles of RT rows (the last fewer): the tile's row count is a constant of each
        // instance
        let mut r0 = 0;
        while r0 < rows {
            match (rows - r0).min(RT) {
                4 => tile::<4>(p, r0),
                3 => tile::<3>(p, r0),
                2 => tile::<2>(p, r0),
                _ => tile::<1>(p, r0),
            }
            r0 += RT;
        }
    }

    /// Rows `r0..r0 + R` of the product, 16 columns at a time in registers.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize>(p: Product, r0: usize) {
        for j0 in (0..p.cols).step_by(KT) {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            if p.add {
                for (r, a) in acc.iter_mut().enumerate() {
                    let o = p.c.add((r0 + r) * p.ldc + j0);
                    *a = [_mm256_loadu_ps(o), _mm256_loadu_ps(o.add(8))];
                }
            }
            for t in 0..p.n {
                let b0 = _mm256_loadu_ps(p.b.add(t * p.ldb + j0));
                let b1 = _mm256_loadu_ps(p.b.add(t * p.ldb + j0 + 8));
                for (r, a) in acc.iter_mut().enumerate() {
                    let w = _mm256_broadcast_ss(&*p.a.add((r0 + r) * p.lda + t));
                    a[0] = _mm256_fmadd_ps(w, b0, a[0]);
                    a[1] = _mm256_fmadd_ps(w, b1, a[1]);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let o = p.c.add((r0 + r) * p.ldc + j0);
                _mm256_storeu_ps(o, a[0]);
                _mm256_storeu_ps(o.add(8), a[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores and accumulators against plain f64 sums, for row counts that leave partial row
    /// tiles, a partial key tile and both value widths; and a row's result is the same bits
    /// whichever rows share its call.
    #[test]
    fn block_products_match_f64_and_do_not_depend_on_the_rows() {
        let f = |n: usize, a: f32| (0..n).map(|i| (i as f32 * a).sin()).collect::<Vec<f32>>();
        for (rows, kb, d, dv) in [
            (7, 37, 64, 64),
            (4, 128, 64, 48),
            (1, 5, 8, 16),
            (9, 16, 3, 32),
        ] {
            let (q, k, v) = (f(rows * d, 0.37), f(kb * d, 0.11), f(kb * dv, 0.23));
            let mut blk = KvBlock::default();
            blk.load::<f32>(
                kb,
                d,
                dv,
                |j| &k[j * d..(j + 1) * d],
                |j| &v[j * dv..(j + 1) * dv],
            );
            let stride = 128;
            let mut sc = vec![0f32; rows * stride];
            blk.scores(&q, rows, d, &mut sc, stride);
            let mut acc = f(rows * dv, 0.05);
            let acc0 = acc.clone();
            blk.accumulate(&sc, stride, rows, dv, &mut acc);
            for r in 0..rows {
                for j in 0..kb {
                    let want: f64 = (0..d).map(|t| (q[r * d + t] * k[j * d + t]) as f64).sum();
                    assert!(
                        (sc[r * stride + j] as f64 - want).abs() < 1e-4,
                        "score {r},{j}"
                    );
                }
                for c in 0..dv {
                    let want: f64 = acc0[r * dv + c] as f64
                        + (0..kb)
                            .map(|j| sc[r * stride + j] as f64 * v[j * dv + c] as f64)
                            .sum::<f64>();
                    assert!((acc[r * dv + c] as f64 - want).abs() < 1e-3, "acc {r},{c}");
                }
            }
            // the last row alone gives the same bits
            let r = rows - 1;
            let mut one = vec![0f32; stride];
            blk.scores(&q[r * d..], 1, d, &mut one, stride);
            assert_eq!(one[..kb], sc[r * stride..r * stride + kb]);
            let mut a1 = acc0[r * dv..(r + 1) * dv].to_vec();
            blk.accumulate(&one, stride, 1, dv, &mut a1);
            assert_eq!(a1, acc[r * dv..(r + 1) * dv]);
        }
    }
}
