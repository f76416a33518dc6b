//! rmlx-io
