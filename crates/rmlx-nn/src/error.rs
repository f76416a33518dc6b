//! The error type of model building: array errors plus weight-map errors that name the key.

/// Errors of building or running modules.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Array(#[from] rmlx::Error),
    /// A missing weight, or one of the wrong shape or dtype (the message names the key, what
    /// was expected and the closest existing key).
    #[error("[weights] {0}")]
    Weight(String),
    /// A module configuration that cannot work (for example RoPE scaling without a factor).
    #[error("[config] {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
