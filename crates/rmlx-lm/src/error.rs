//! The LLM runtime's error type: every message names the file, key or value and the fix.

/// Errors of loading, tokenizing, templating and generating.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    #[error(transparent)]
    Array(#[from] rmlx::Error),
    /// A module or weight-map error from rmlx-nn (names the weight key and the closest one).
    #[error(transparent)]
    Nn(#[from] rmlx_nn::Error),
    /// A bad or unsupported `config.json` / GGUF metadata value.
    #[error("[config] {0}")]
    Config(String),
    /// A missing or malformed model file or weight.
    #[error("[load] {0}")]
    Load(String),
    #[error("[tokenizer] {0}")]
    Tokenizer(String),
    #[error("[chat_template] {0}")]
    Template(String),
    /// A bad argument to generation (prompt longer than the context, bad sampler value).
    #[error("[generate] {0}")]
    Generate(String),
    #[error("[io] {0}")]
    Io(String),
}

pub type Result<T, E = LmError> = std::result::Result<T, E>;
