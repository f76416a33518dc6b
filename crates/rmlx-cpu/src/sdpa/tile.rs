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
        #[cfg(target_arch = "x86_64")]
        if super::simd::avx2_fma() {
            // SAFETY: AVX2 and FMA were detected at run time; bounds as asserted above.
            return unsafe { x86::scores(qf, rows, d, &self.kt, self.kbp, sc, stride) };
        }
        for r in 0..rows {
            let q = &qf[r * d..(r + 1) * d];
            for j in 0..self.kbp {
                let mut s = 0f32;
                for (dd, &qv) in q.iter().enumerate() {
                    s = qv.mul_add(self.kt[dd * self.kbp + j], s);
                }
                sc[r * stride + j] = s;
            }
        }
    }

    /// `acc[r] += Σ_j p[r * stride + j] · v_j` over the block's keys, for `rows` rows of
    /// `acc: [rows, dv]`.
    pub fn accumulate(&self, p: &[f32], stride: usize, rows: usize, dv: usize, acc: &mut [f32]) {
        debug_assert!(acc.len() >= rows * dv && p.len() >= (rows - 1) * stride + self.kb);
        #[cfg(target_arch = "x86_64")]
        if super::simd::avx2_fma() && dv.is_multiple_of(KT) {
            // SAFETY: as for the scores.
            return unsafe { x86::accumulate(p, stride, rows, self.kb, &self.vf, dv, acc) };
        }
        for r in 0..rows {
            let a = &mut acc[r * dv..(r + 1) * dv];
            for j in 0..self.kb {
                let w = p[r * stride + j];
                for (x, &v) in a.iter_mut().zip(&self.vf[j * dv..(j + 1) * dv]) {
                    *x = w.mul_add(v, *x);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{KT, RT};
    use std::arch::x86_64::*;

    /// `$tile::<R>(args with $r0)` over the rows in tiles of [`RT`] (`R` rows, the last tile
    /// fewer): the tile's row count is a constant of each instance.
    macro_rules! row_tiles {
        ($rows:expr, |$r0:ident| $tile:ident($($arg:expr),*)) => {{
            let mut $r0 = 0;
            while $r0 < $rows {
                match ($rows - $r0).min(RT) {
                    4 => $tile::<4>($($arg),*),
                    3 => $tile::<3>($($arg),*),
                    2 => $tile::<2>($($arg),*),
                    _ => $tile::<1>($($arg),*),
                }
                $r0 += RT;
            }
        }};
    }

    /// # Safety
    /// AVX2 and FMA; `qf: [rows, d]`, `kt: [d, kbp]` (`kbp` a multiple of 16), `sc` holds
    /// `rows` rows of `stride >= kbp`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scores(
        qf: &[f32],
        rows: usize,
        d: usize,
        kt: &[f32],
        kbp: usize,
        sc: &mut [f32],
        stride: usize,
    ) {
        row_tiles!(rows, |r0| score_tile(qf, r0, d, kt, kbp, sc, stride));
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn score_tile<const R: usize>(
        qf: &[f32],
        r0: usize,
        d: usize,
        kt: &[f32],
        kbp: usize,
        sc: &mut [f32],
        stride: usize,
    ) {
        let (q, k, s) = (qf.as_ptr().add(r0 * d), kt.as_ptr(), sc.as_mut_ptr());
        for j0 in (0..kbp).step_by(KT) {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for dd in 0..d {
                let k0 = _mm256_loadu_ps(k.add(dd * kbp + j0));
                let k1 = _mm256_loadu_ps(k.add(dd * kbp + j0 + 8));
                for (r, a) in acc.iter_mut().enumerate() {
                    let qb = _mm256_broadcast_ss(&*q.add(r * d + dd));
                    a[0] = _mm256_fmadd_ps(qb, k0, a[0]);
                    a[1] = _mm256_fmadd_ps(qb, k1, a[1]);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let o = s.add((r0 + r) * stride + j0);
                _mm256_storeu_ps(o, a[0]);
                _mm256_storeu_ps(o.add(8), a[1]);
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA; `p` holds `rows` rows of `stride >= kb`, `vf: [kb, dv]`, `acc: [rows, dv]`,
    /// `dv` a multiple of 16.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn accumulate(
        p: &[f32],
        stride: usize,
        rows: usize,
        kb: usize,
        vf: &[f32],
        dv: usize,
        acc: &mut [f32],
    ) {
        row_tiles!(rows, |r0| pv_tile(p, stride, r0, kb, vf, dv, acc));
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pv_tile<const R: usize>(
        p: &[f32],
        stride: usize,
        r0: usize,
        kb: usize,
        vf: &[f32],
        dv: usize,
        acc: &mut [f32],
    ) {
        let (pp, v, out) = (p.as_ptr(), vf.as_ptr(), acc.as_mut_ptr());
        for c0 in (0..dv).step_by(KT) {
            let mut a = [[_mm256_setzero_ps(); 2]; R];
            for (r, ar) in a.iter_mut().enumerate() {
                let o = out.add((r0 + r) * dv + c0);
                *ar = [_mm256_loadu_ps(o), _mm256_loadu_ps(o.add(8))];
            }
            for j in 0..kb {
                let v0 = _mm256_loadu_ps(v.add(j * dv + c0));
                let v1 = _mm256_loadu_ps(v.add(j * dv + c0 + 8));
                for (r, ar) in a.iter_mut().enumerate() {
                    let w = _mm256_broadcast_ss(&*pp.add((r0 + r) * stride + j));
                    ar[0] = _mm256_fmadd_ps(w, v0, ar[0]);
                    ar[1] = _mm256_fmadd_ps(w, v1, ar[1]);
                }
            }
            for (r, ar) in a.iter().enumerate() {
                let o = out.add((r0 + r) * dv + c0);
                _mm256_storeu_ps(o, ar[0]);
                _mm256_storeu_ps(o.add(8), ar[1]);
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
