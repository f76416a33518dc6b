//! (kernels of this family)

#[allow(unused_imports)]
use rmlx_core::primitive::*;
#[allow(unused_imports)]
use rmlx_core::{ArrayData, Error, Result};

#[allow(unused_variables)]
pub fn concatenate(xs: &[ArrayData], axis: usize, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "concatenate is not implemented on the CPU yet"))
}

#[allow(unused_variables)]
pub fn slice_update(src: &ArrayData, upd: &ArrayData, start: &[usize], step: &[isize], out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "slice_update is not implemented on the CPU yet"))
}

#[allow(unused_variables)]
pub fn take(a: &ArrayData, idx: &ArrayData, axis: usize, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "take is not implemented on the CPU yet"))
}

#[allow(unused_variables)]
pub fn take_along_axis(a: &ArrayData, idx: &ArrayData, axis: usize, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "take_along_axis is not implemented on the CPU yet"))
}

#[allow(unused_variables)]
pub fn put_along_axis(a: &ArrayData, idx: &ArrayData, vals: &ArrayData, axis: usize, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "put_along_axis is not implemented on the CPU yet"))
}
