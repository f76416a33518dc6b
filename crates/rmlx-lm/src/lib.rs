//! rmlx-lm: what mlx-lm is to MLX. Models (`models/<model_type>.rs`), tokenizer and chat
//! templates, KV caches passed into the model, sampling, generation, loading, convert.

pub mod batch;
pub mod cache;
pub mod chat_template;
pub mod config;
pub mod convert;
pub mod error;
pub mod generate;
pub mod graph_decode;
pub mod graph_rows;
pub mod load;
pub mod models;
pub mod perplexity;
pub mod prefix_cache;
pub mod sample;
pub mod scheduler;
pub mod stop;
pub mod tokenizer;

pub use error::{LmError, Result};
