//! tokenizer (being written)
