//! perplexity (being written)
