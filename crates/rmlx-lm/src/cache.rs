//! cache (being written)
