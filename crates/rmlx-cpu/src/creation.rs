//! Creation kernels: `arange`.

use crate::copy::out_slice_mut;
use rmlx_core::dtype::Element;
use rmlx_core::primitive::OutputSpec;
use rmlx_core::{dispatch_dtype, ArrayData, Result};

/// `out[i] = start + i * step` computed in f64, then converted to the output dtype.
pub fn arange(start: f64, step: f64, out: &OutputSpec) -> Result<ArrayData> {
    let mut o = ArrayData::alloc(out.shape, out.dtype)?;
    dispatch_dtype!(out.dtype, T => fill::<T>(&mut o, start, step));
    Ok(o)
}

fn fill<T: Element>(o: &mut ArrayData, start: f64, step: f64) {
    let dst: &mut [T] = out_slice_mut(o);
    for (i, d) in dst.iter_mut().enumerate() {
        *d = T::from_f64(start + i as f64 * step);
    }
}
