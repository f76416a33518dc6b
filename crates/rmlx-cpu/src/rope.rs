//! Rotary position embedding of the first `dims` features of `x: [B, ..., L, D]`.
//!
//! Angles are computed as MLX's fallback does them, in f32: `pos = (l + offset[b]) * scale`,
//! `inv_freq[i] = exp(-i * ln(base) / (dims/2))` (or `1 / freqs[i]`), `theta = pos * inv_freq`.
//! The rotation itself runs in f32 and rounds once to the output dtype.

use crate::copy::{contiguous, out_slice_mut};
use crate::norm::row_layout;
use rayon::prelude::*;
use rmlx_core::dtype::Element;
use rmlx_core::primitive::OutputSpec;
use rmlx_core::{bf16, f16, ArrayData, Dtype, Error, Result};

/// Target elements per rayon task.
const TASK_ELEMS: usize = 1 << 14;

/// `[x, offset, freqs?]` → rotated `x` (row-contiguous, same shape and dtype).
pub fn rope(
    x: &[ArrayData],
    dims: usize,
    traditional: bool,
    base: f32,
    scale: f32,
    has_freqs: bool,
    out: &OutputSpec,
) -> Result<ArrayData> {
    let xd = &x[0];
    let nd = xd.shape.len();
    if nd < 2 || dims == 0 || !dims.is_multiple_of(2) || dims > xd.shape[nd - 1] {
        return Err(Error::runtime(
            "cpu",
            format!("[rope] bad input shape {:?} for dims {dims}", xd.shape),
        ));
    }
    let half = dims / 2;
    let b = xd.shape[0];
    let l = xd.shape[nd - 2];
    // Offsets: one per batch entry, or one shared.
    if x[1].dtype != Dtype::I32 {
        return Err(Error::runtime(
            "cpu",
            format!("[rope] offset must be int32, got {}", x[1].dtype),
        ));
    }
    let offs = contiguous::<i32>(&x[1]);
    if offs.len() != 1 && offs.len() != b {
        return Err(Error::runtime(
            "cpu",
            format!("[rope] offset has {} elements for batch {b}", offs.len()),
        ));
    }
    let inv_freq: Vec<f32> = if has_freqs {
        let f = x
            .get(2)
            .ok_or_else(|| Error::runtime("cpu", "[rope] freqs input missing"))?;
        if f.dtype != Dtype::F32 || f.numel() != half {
            return Err(Error::runtime(
                "cpu",
                format!("[rope] freqs must be float32 with {half} elements"),
            ));
        }
        contiguous::<f32>(f).iter().map(|&v| 1.0 / v).collect()
    } else {
        let c = base.ln() / half as f32;
        (0..half).map(|i| (-(i as f32) * c).exp()).collect()
    };
    // cos/sin table [n_off, L, half], computed once and shared by every head.
    let n_off = offs.len();
    let mut table = vec![(0f32, 0f32); n_off * l * half];
    table
        .par_chunks_mut(half.max(1))
        .enumerate()
        .for_each(|(r, row)| {
            let (bo, li) = (r / l, r % l);
            let pos = (li as f32 + offs[bo] as f32) * scale;
            for (t, &f) in row.iter_mut().zip(&inv_freq) {
                let th = pos * f;
                *t = (th.cos(), th.sin());
            }
        });
    let mut o = ArrayData::alloc(out.shape, out.dtype)?;
    let args = Args {
        dims,
        traditional,
        l,
        rows_per_batch: xd.numel() / xd.shape[nd - 1] / b.max(1),
        n_off,
        table: &table,
    };
    match xd.dtype {
        Dtype::F32 => rope_t::<f32>(xd, &args, &mut o),
        Dtype::F16 => rope_t::<f16>(xd, &args, &mut o),
        Dtype::BF16 => rope_t::<bf16>(xd, &args, &mut o),
        t => {
            return Err(Error::dtype(
                "rope",
                format!("input must be a floating type, got {t}"),
            ))
        }
    }
    Ok(o)
}

struct Args<'a> {
    dims: usize,
    traditional: bool,
    l: usize,
    rows_per_batch: usize,
    n_off: usize,
    table: &'a [(f32, f32)],
}

fn rope_t<T: Element>(x: &ArrayData, a: &Args, out: &mut ArrayData) {
    let d = *x.shape.last().unwrap_or(&0);
    if d == 0 || x.numel() == 0 {
        return;
    }
    let half = a.dims / 2;
    let (rows, stride) = row_layout(x);
    let src: &[T] = x.buffer_as::<T>();
    let dst: &mut [T] = out_slice_mut(out);
    let rpt = (TASK_ELEMS / d).max(1);
    dst.par_chunks_mut(d * rpt)
        .zip(rows.par_chunks(rpt))
        .enumerate()
        .for_each(|(c, (o, starts))| {
            let mut row = vec![0f32; d];
            for (k, (orow, &start)) in o.chunks_exact_mut(d).zip(starts).enumerate() {
                let r = c * rpt + k;
                let bo = if a.n_off == 1 {
                    0
                } else {
                    r / a.rows_per_batch
                };
                let li = r % a.l;
                let cs = &a.table[(bo * a.l + li) * half..][..half];
                crate::norm::load_row(src, start, stride, &mut row);
                if a.traditional {
                    for (i, &(c, s)) in cs.iter().enumerate() {
                        let (x1, x2) = (row[2 * i], row[2 * i + 1]);
                        orow[2 * i] = T::from_f32(x1 * c - x2 * s);
                        orow[2 * i + 1] = T::from_f32(x1 * s + x2 * c);
                    }
                } else {
                    for (i, &(c, s)) in cs.iter().enumerate() {
                        let (x1, x2) = (row[i], row[i + half]);
                        orow[i] = T::from_f32(x1 * c - x2 * s);
                        orow[i + half] = T::from_f32(x1 * s + x2 * c);
                    }
                }
                // Features past `dims` pass through unchanged (no f32 round trip needed, but
                // f32 holds every f16/bf16 exactly, so the conversion is lossless).
                for (ov, &v) in orow[a.dims..].iter_mut().zip(&row[a.dims..]) {
                    *ov = T::from_f32(v);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data<T: Element>(v: &[T], shape: &[usize]) -> ArrayData {
        let mut d = ArrayData::alloc(shape, T::DTYPE).unwrap();
        out_slice_mut::<T>(&mut d).copy_from_slice(v);
        d
    }

    #[test]
    fn rotates_pairs_by_position() {
        // x: [1, 2, 4] (B=1, L=2, D=4), dims 2, traditional: pair (x0, x1) rotates by l * 1.
        let x = data::<f32>(&[1.0, 0.0, 5.0, 6.0, 1.0, 0.0, 7.0, 8.0], &[1, 2, 4]);
        let off = data::<i32>(&[0], &[]);
        let spec = OutputSpec {
            shape: &[1, 2, 4],
            dtype: Dtype::F32,
        };
        let y = rope(&[x, off], 2, true, 10000.0, 1.0, false, &spec).unwrap();
        let y = y.as_slice::<f32>().unwrap();
        let want = [1.0, 0.0, 5.0, 6.0, 1f32.cos(), 1f32.sin(), 7.0, 8.0];
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{y:?}");
        }
    }
}
