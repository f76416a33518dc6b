//! Ablation switches of the layers' fused paths, read from the environment once each: unset,
//! empty or anything but `0` → on (the rule of the CUDA backend's switches, `rmlx-cuda`'s
//! `env.rs`). Benchmarks turn one off to measure what it buys.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// Whether `var` leaves its fused path on, read once into `cell`.
pub fn enabled(cell: &'static OnceLock<bool>, var: &str) -> bool {
    *cell.get_or_init(|| std::env::var(var).map_or(true, |v| v != "0"))
}

/// A process-wide setting, off unless the program turns it on ([`ProcessSwitch::set`]) or the
/// environment's `var=1` does (read once, the first time the setting is asked for and not set).
pub struct ProcessSwitch {
    /// 0: not decided yet, 1: off, 2: on.
    state: AtomicU8,
    var: &'static str,
}

impl ProcessSwitch {
    pub const fn new(var: &'static str) -> ProcessSwitch {
        ProcessSwitch {
            state: AtomicU8::new(0),
            var,
        }
    }

    pub fn set(&self, on: bool) {
        self.state.store(if on { 2 } else { 1 }, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        match self.state.load(Ordering::Relaxed) {
            0 => {
                let on = std::env::var(self.var).is_ok_and(|v| v == "1");
                // a `set` that came in meanwhile wins
                let _ = self.state.compare_exchange(
                    0,
                    if on { 2 } else { 1 },
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                self.state.load(Ordering::Relaxed) == 2
            }
            v => v == 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ProcessSwitch;

    /// Unset, the environment decides (here: a variable nobody sets, so off); `set` overrides.
    #[test]
    fn process_switch_defaults_off_and_follows_set() {
        static S: ProcessSwitch = ProcessSwitch::new("RMLX_TEST_SWITCH_NEVER_SET");
        assert!(!S.get());
        S.set(true);
        assert!(S.get());
        S.set(false);
        assert!(!S.get());
    }
}
