//! Walking strided layouts: collapse what is contiguous, loop the rest.

use rmlx_core::shape::Strides;
use smallvec_lite::Dims;

/// Minimal fixed-capacity dims without another dependency.
mod smallvec_lite {
    pub type Dims = Vec<(usize, isize)>;
}

/// Merges adjacent axes that are laid out contiguously with each other (and drops size-1
/// axes), so a strided walk has as few loops as possible. Returns (size, stride) pairs.
pub fn collapse(shape: &[usize], strides: &[isize]) -> Dims {
    let mut out: Dims = Vec::with_capacity(shape.len());
    for (&d, &s) in shape.iter().zip(strides) {
        if d == 1 {
            continue;
        }
        if let Some(last) = out.last_mut() {
            if last.1 == s * d as isize {
                last.0 *= d;
                last.1 = s;
                continue;
            }
        }
        out.push((d, s));
    }
    out
}

/// Source element offsets of `n` consecutive output elements starting at flat index `start`
/// (row-major), for a layout with `offset` and collapsed `dims`. Calls `f(out_i, src_off)`.
#[inline]
pub fn walk(dims: &Dims, offset: usize, start: usize, n: usize, mut f: impl FnMut(usize, usize)) {
    if n == 0 {
        return;
    }
    if dims.is_empty() {
        for i in 0..n {
            f(start + i, offset);
        }
        return;
    }
    // decompose start into a multi-index
    let nd = dims.len();
    let mut idx = vec![0usize; nd];
    let mut rem = start;
    for k in (0..nd).rev() {
        idx[k] = rem % dims[k].0;
        rem /= dims[k].0;
    }
    let mut off = offset as isize;
    for k in 0..nd {
        off += idx[k] as isize * dims[k].1;
    }
    let (inner_n, inner_s) = dims[nd - 1];
    let mut i = 0;
    while i < n {
        let run = (inner_n - idx[nd - 1]).min(n - i);
        let mut o = off;
        for j in 0..run {
            f(start + i + j, o as usize);
            o += inner_s;
        }
        i += run;
        off += run as isize * inner_s;
        idx[nd - 1] += run;
        // carry
        let mut k = nd - 1;
        while idx[k] == dims[k].0 && k > 0 {
            off -= dims[k].0 as isize * dims[k].1;
            idx[k] = 0;
            k -= 1;
            idx[k] += 1;
            off += dims[k].1;
        }
    }
}

/// Element offsets of every element of a (shape, strides, offset) layout in row-major order.
pub fn offsets(shape: &[usize], strides: &Strides, offset: usize) -> Vec<usize> {
    let n: usize = shape.iter().product();
    let dims = collapse(shape, strides);
    let mut out = vec![0usize; n];
    walk(&dims, offset, 0, n, |i, o| out[i] = o);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_transposed() {
        // (2,3) transposed view of a row-major (3,2)... here: shape (3,2) strides (1,3)
        let o = offsets(&[3, 2], &[1, 3].into_iter().collect(), 0);
        assert_eq!(o, vec![0, 3, 1, 4, 2, 5]);
        // start in the middle
        let dims = collapse(&[3, 2], &[1, 3]);
        let mut got = vec![];
        walk(&dims, 0, 3, 3, |_, off| got.push(off));
        assert_eq!(got, vec![4, 2, 5]);
    }

    #[test]
    fn collapse_contiguous() {
        assert_eq!(collapse(&[2, 3, 4], &[12, 4, 1]), vec![(24, 1)]);
        assert_eq!(collapse(&[2, 1, 4], &[0, 7, 1]), vec![(2, 0), (4, 1)]);
    }
}
