//! rmlx-nn: modules (filled in by the runtime work)
