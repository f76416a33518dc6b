//! (kernels of this family)

#[allow(unused_imports)]
use rmlx_core::primitive::*;
#[allow(unused_imports)]
use rmlx_core::{ArrayData, Error, Result};

#[allow(unused_variables)]
pub fn sort(x: &ArrayData, axis: usize, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "sort is not implemented on the CPU yet"))
}

#[allow(unused_variables)]
pub fn argsort(x: &ArrayData, axis: usize, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "argsort is not implemented on the CPU yet"))
}

#[allow(unused_variables)]
pub fn argpartition(x: &ArrayData, kth: usize, axis: usize, out: &OutputSpec) -> Result<ArrayData> {
    Err(Error::runtime("cpu", "argpartition is not implemented on the CPU yet"))
}
