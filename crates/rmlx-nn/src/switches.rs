//! Ablation switches of the layers' fused paths, read from the environment once each: unset,
//! empty or anything but `0` → on (the rule of the CUDA backend's switches, `rmlx-cuda`'s
//! `env.rs`). Benchmarks turn one off to measure what it buys.

use std::sync::OnceLock;

/// Whether `var` leaves its fused path on, read once into `cell`.
pub fn enabled(cell: &'static OnceLock<bool>, var: &str) -> bool {
    *cell.get_or_init(|| std::env::var(var).map_or(true, |v| v != "0"))
}
