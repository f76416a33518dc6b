//! rmlx: the facade. Re-exports the core and I/O, and registers the compiled backends when
//! the program starts (call [`init`] yourself if your platform skips load-time constructors).

pub use rmlx_core::*;
pub use rmlx_core::{fast, ops};
pub use rmlx_cuda as cuda;
pub use rmlx_io as io;

/// Registers every compiled backend. Idempotent; runs at load time on supported platforms.
pub fn init() {
    rmlx_cpu::register();
    // Cheap: CUDA is probed only when a GPU is first asked for.
    rmlx_cuda::register();
}

#[ctor::ctor]
fn register_backends_at_load() {
    init();
}
