//! Graph transforms. Today: evaluation. Later on the same graph: `vjp`, `vmap`, `compile`.

mod eval;
pub use eval::{async_eval, eval, with_eval_lock};
