//! sample (being written)
