//! Indexing: gathers, scatters and strided updates.

use crate::array::Array;
use crate::error::{Error, Result};
use crate::ops::convert::astype;
use crate::ops::shape::python_slice;
use crate::primitive::Primitive;
use crate::shape::fmt_shape;

/// A copy of `src` with `update` written into the strided region that starts at `start`
/// (per leading axis, negative counts from the end) with `step`; the update's shape gives the
/// region's extent (after broadcasting the update to it).
#[track_caller]
pub fn slice_update(src: &Array, update: &Array, start: &[i64], step: &[i64]) -> Result<Array> {
    let n = src.ndim();
    if start.len() > n || step.len() != start.len() {
        return Err(Error::invalid(
            "slice_update",
            format!("start {start:?} and step {step:?} do not fit an array of shape {}", fmt_shape(src.shape())),
        ));
    }
    if update.ndim() > n {
        return Err(Error::invalid(
            "slice_update",
            format!("update of shape {} has more dimensions than {}", fmt_shape(update.shape()), fmt_shape(src.shape())),
        ));
    }
    // The region's extent: the update's trailing dims aligned right, full extent elsewhere.
    let off = n - update.ndim();
    let mut region: Vec<usize> = src.shape().to_vec();
    for i in 0..update.ndim() {
        region[off + i] = update.shape()[i];
    }
    let mut st = Vec::with_capacity(n);
    let mut sp = Vec::with_capacity(n);
    for ax in 0..n {
        let (b, s) = if ax < start.len() {
            let (b, _, s) = python_slice(start[ax], if step[ax] > 0 { i64::MAX } else { i64::MIN + 1 }, step[ax], src.shape()[ax])
                .ok_or_else(|| Error::invalid("slice_update", "step cannot be zero"))?;
            (b, s)
        } else {
            (0, 1)
        };
        if ax < start.len() && step[ax] != 1 && region[ax] == src.shape()[ax] && ax < off {
            region[ax] = 1;
        }
        // the last element written must stay inside the axis
        if region[ax] > 0 {
            let last = b + (region[ax] as i64 - 1) * s;
            if b < 0 || last < 0 || last >= src.shape()[ax] as i64 || b >= src.shape()[ax] as i64 {
                return Err(Error::invalid(
                    "slice_update",
                    format!(
                        "update of shape {} at start {start:?} step {step:?} does not fit in shape {}",
                        fmt_shape(update.shape()),
                        fmt_shape(src.shape())
                    ),
                ));
            }
        }
        st.push(b.max(0) as usize);
        sp.push(s as isize);
    }
    let upd = crate::ops::broadcast_to(&astype(update, src.dtype()), &region)?;
    Ok(Array::make(
        src.shape().into(),
        src.dtype(),
        Primitive::SliceUpdate { start: st, step: sp },
        vec![src.clone(), upd],
    ))
}
