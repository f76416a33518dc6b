//! rmlx-nn: the building blocks of model files. `Linear` and `Embedding` are dense-or-quantized
//! enums (MLX affine quantization, so mlx-community and GGUF weights run through the same
//! kernels), `RmsNorm`/`LayerNorm` over `fast::*`, one `Rope` with the scaling variants models
//! use, `SwitchLinear`/`SwitchGlu` (mixture-of-experts layers over `gather_qmm`) with their
//! routing, and `Weights`, the name → array map a model is built from.

mod error;
mod linear;
mod norm;
mod parallel;
mod rope;
mod swiglu;
mod switch;
pub mod switches;
mod weights;

pub use error::{Error, Result};
pub use linear::{Embedding, Linear, QuantParams};
pub use norm::{LayerNorm, Normed, RmsNorm};
pub use parallel::Parallel;
pub use rope::{Rope, RopeScaling};
pub use swiglu::GateUpSwiglu;
pub use switch::{route, Routing, SwitchGlu, SwitchLinear};
pub use weights::{closest_key, Weights};
