//! rmlx-nn
