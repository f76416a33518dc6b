//! The public ops. Each validates its arguments at once (errors start with `[op]`) and returns
//! a lazy array; most are compositions of a few primitives.

pub mod binary;
pub mod conv;
pub mod convert;
pub mod creation;
pub mod einsum;
pub mod gather_matmul;
pub mod indexing;
pub mod linalg;
pub mod matmul;
pub mod quantized;
pub mod random;
pub mod reduce;
pub mod scan;
pub mod shape;
pub mod sort;
pub mod unary;

pub use binary::*;
pub use conv::*;
pub use convert::*;
pub use creation::*;
pub use einsum::*;
pub use gather_matmul::*;
pub use indexing::*;
pub use linalg::*;
pub use matmul::*;
pub use quantized::*;
pub use reduce::*;
pub use scan::*;
pub use shape::*;
pub use sort::*;
pub use unary::*;
