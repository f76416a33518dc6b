//! Fused ops with fallbacks (filled in by the ops work)
