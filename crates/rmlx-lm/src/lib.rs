//! rmlx-lm
