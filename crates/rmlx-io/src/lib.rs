//! rmlx-io: model files in and out.
//!
//! - [`safetensors`]: memory-mapped loading (tensors are zero-copy views of the file), atomic
//!   saving, and [`sharded`] writing with an index as mlx-lm lays checkpoints out.
//! - [`gguf`]: the GGUF reader (v2/v3, every metadata type) with lossless import of the common
//!   quantized block types into MLX affine quantization.
//! - [`npy`]: NumPy `.npy` load/save.
//!
//! Every parser validates what it reads against the file size before allocating, and reports
//! a corrupt or unsupported file as an error naming the file and the tensor, never a panic.

mod file;
pub mod gguf;
pub mod npy;
pub mod safetensors;
pub mod sharded;

pub use file::MmapFile;
pub use gguf::{GgmlType, GgufFile, GgufValue, Tensor, TensorInfo};
pub use npy::{load_npy, parse_npy, save_npy};
pub use safetensors::{load_safetensors, parse_safetensors, save_safetensors, Metadata};
pub use sharded::{save_sharded, DEFAULT_MAX_SHARD_BYTES};
