//! GPU kernels by family, one file each (the CPU backend's layout).

pub mod elementwise;
pub mod matmul;
