//! rmlx-core: the lazy array graph, dtypes, shapes, primitives, ops and the backend trait.
//!
//! Data flow: an op validates its arguments and returns a lazy [`Array`] holding a
//! [`Primitive`] and its inputs; [`eval`] walks the graph once in dependency order and asks
//! the [`Backend`] of each node's stream to run it; views are resolved here without a backend.

pub mod array;
pub mod backend;
pub mod buffer;
pub mod device;
mod display;
pub mod dtype;
pub mod error;
pub mod fast;
pub mod memory;
pub mod ops;
pub mod primitive;
pub mod shape;
pub mod transforms;

pub use array::{Array, ArrayData};
pub use backend::{backend_for, is_available, register_backend, Backend};
pub use buffer::{Buffer, DeviceMemory, MappedBytes};
pub use device::{
    current_device, default_device, default_stream, pop_stream, push_stream, set_default_device,
    with_device, with_stream, Device, DeviceType, Stream,
};
pub use dtype::{bf16, f16, Dtype, Element};
pub use error::{Error, Result};
pub use memory::{
    active_memory, cache_memory, clear_cache, memory_limit, peak_memory, reset_peak_memory,
    set_cache_limit, set_memory_limit, MemoryControl, MemoryStats,
};
pub use ops::random;
pub use primitive::Primitive;
pub use shape::Shape;
pub use transforms::{async_eval, eval};
