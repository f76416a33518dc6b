//! Switches and tuning counts read from the environment, once each: ablation switches
//! (`RMLX_SDPA_FLASH=0` ...), debugging aids (`RMLX_CUDA_SYNC=1` ...) and benchmark knobs.

use std::sync::OnceLock;

/// `var` as a switch: unset or empty → `default`, `0` → off, anything else → on.
pub(crate) fn flag_value(var: &str, default: bool) -> bool {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v != "0",
        _ => default,
    }
}

/// [`flag_value`], read once into `cell` (the callers sit on hot paths).
pub(crate) fn flag(cell: &'static OnceLock<bool>, var: &str, default: bool) -> bool {
    *cell.get_or_init(|| flag_value(var, default))
}

/// A positive count from `var`, else `default`, read once into `cell`.
pub(crate) fn count(cell: &'static OnceLock<usize>, var: &str, default: usize) -> usize {
    *cell.get_or_init(|| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(default)
    })
}

#[cfg(test)]
mod tests {
    use super::flag_value;

    /// Unset and empty give the default, `0` turns a switch off, any other value on (the rule
    /// every switch of the backend followed before it was shared).
    #[test]
    fn switch_values() {
        let var = "RMLX_TEST_ENV_FLAG_ONLY_HERE";
        let set = |v: Option<&str>| match v {
            // SAFETY: this test alone reads or writes this variable.
            Some(v) => unsafe { std::env::set_var(var, v) },
            None => unsafe { std::env::remove_var(var) },
        };
        for (v, default, want) in [
            (None, true, true),
            (None, false, false),
            (Some(""), true, true),
            (Some(""), false, false),
            (Some("0"), true, false),
            (Some("1"), false, true),
            (Some("yes"), false, true),
        ] {
            set(v);
            assert_eq!(flag_value(var, default), want, "{v:?}, default {default}");
        }
        set(None);
    }
}
