//! convert (being written)
