//! One error type for the core; every message starts with `[op]`.

use std::panic::Location;

/// What went wrong, sorted so that bindings can map it (Python: `ValueError`, `TypeError`,
/// `MemoryError`, `RuntimeError`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad argument: wrong shape, bad axis, out-of-range value.
    #[error("[{op}] {msg}")]
    Invalid { op: &'static str, msg: String },
    /// An unsupported dtype for an op.
    #[error("[{op}] {msg}")]
    Type { op: &'static str, msg: String },
    /// An allocation that would pass the memory limit or that the system refused.
    #[error("[{op}] out of memory: {msg}")]
    OutOfMemory { op: &'static str, msg: String },
    /// A file that cannot be read or is malformed.
    #[error("[{op}] {msg}")]
    Io { op: &'static str, msg: String },
    /// A failure while evaluating a node, with the place that built it.
    #[error("{source} (array built at {site})")]
    Eval {
        source: Box<Error>,
        site: &'static Location<'static>,
    },
    /// Anything else at run time (a backend failure, a missing backend).
    #[error("[{op}] {msg}")]
    Runtime { op: &'static str, msg: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Error {
        Error::Invalid {
            op,
            msg: msg.into(),
        }
    }
    pub fn dtype(op: &'static str, msg: impl Into<String>) -> Error {
        Error::Type {
            op,
            msg: msg.into(),
        }
    }
    pub fn io(op: &'static str, msg: impl Into<String>) -> Error {
        Error::Io {
            op,
            msg: msg.into(),
        }
    }
    pub fn runtime(op: &'static str, msg: impl Into<String>) -> Error {
        Error::Runtime {
            op,
            msg: msg.into(),
        }
    }
    pub fn oom(op: &'static str, msg: impl Into<String>) -> Error {
        Error::OutOfMemory {
            op,
            msg: msg.into(),
        }
    }
    /// The innermost error (through `Eval` wrappers).
    pub fn root(&self) -> &Error {
        match self {
            Error::Eval { source, .. } => source.root(),
            e => e,
        }
    }
}

/// `bail!(invalid "op", "fmt", args)` style helper used across the crate.
#[macro_export]
macro_rules! bail {
    ($op:expr, $($arg:tt)*) => {
        return Err($crate::Error::invalid($op, format!($($arg)*)))
    };
}
