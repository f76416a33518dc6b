//! GPU kernels by family, one file each (the CPU backend's layout).

pub mod elementwise;
pub mod gather_matmul;
pub mod indexing;
pub mod matmul;
pub mod moe;
pub mod norm;
pub mod qmv_stream;
pub mod quantized;
pub mod quantized_kv;
pub mod random;
pub mod reduce;
pub mod rope;
pub mod rope_kv;
pub mod rope_kv_sdpa;
pub mod scan;
pub mod sdpa;
pub mod sdpa_quantized;
pub mod softmax;
pub mod sort;
