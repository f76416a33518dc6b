//! Element types and MLX's type promotion.

use crate::error::{Error, Result};

/// The element type of an array. There is no f64, as in MLX on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    Bool,
    U8,
    U32,
    I32,
    I64,
    F16,
    BF16,
    F32,
}

pub use half::{bf16, f16};

impl Dtype {
    pub const ALL: [Dtype; 8] = [
        Dtype::Bool,
        Dtype::U8,
        Dtype::U32,
        Dtype::I32,
        Dtype::I64,
        Dtype::F16,
        Dtype::BF16,
        Dtype::F32,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 => 1,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::I64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::BF16 | Dtype::F32)
    }

    pub fn is_integer(self) -> bool {
        matches!(self, Dtype::U8 | Dtype::U32 | Dtype::I32 | Dtype::I64)
    }

    pub fn is_signed(self) -> bool {
        matches!(self, Dtype::I32 | Dtype::I64) || self.is_float()
    }

    /// The largest finite value (`finfo(t).max`, `iinfo(t).max`; 1 for bool).
    pub fn max_value(self) -> f64 {
        match self {
            Dtype::Bool => 1.0,
            Dtype::U8 => u8::MAX as f64,
            Dtype::U32 => u32::MAX as f64,
            Dtype::I32 => i32::MAX as f64,
            Dtype::I64 => i64::MAX as f64,
            Dtype::F16 => f16::MAX.to_f64(),
            Dtype::BF16 => bf16::MAX.to_f64(),
            Dtype::F32 => f32::MAX as f64,
        }
    }

    /// The lowest finite value (`finfo(t).min`, `iinfo(t).min`).
    pub fn min_value(self) -> f64 {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::U32 => 0.0,
            Dtype::I32 => i32::MIN as f64,
            Dtype::I64 => i64::MIN as f64,
            Dtype::F16 | Dtype::BF16 | Dtype::F32 => -self.max_value(),
        }
    }

    /// For float types: the distance from 1 to the next larger value (`finfo(t).eps`).
    pub fn eps(self) -> Option<f64> {
        match self {
            Dtype::F16 => Some(f16::EPSILON.to_f64()),
            Dtype::BF16 => Some(bf16::EPSILON.to_f64()),
            Dtype::F32 => Some(f32::EPSILON as f64),
            _ => None,
        }
    }

    /// The name MLX and NumPy use (`float32`, `bfloat16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "bool",
            Dtype::U8 => "uint8",
            Dtype::U32 => "uint32",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::F16 => "float16",
            Dtype::BF16 => "bfloat16",
            Dtype::F32 => "float32",
        }
    }

    /// Parses MLX/NumPy names and the short forms (`f32`, `bf16`, ...).
    pub fn parse(s: &str) -> Result<Dtype> {
        Ok(match s {
            "bool" | "bool_" => Dtype::Bool,
            "uint8" | "u8" => Dtype::U8,
            "uint32" | "u32" => Dtype::U32,
            "int32" | "i32" => Dtype::I32,
            "int64" | "i64" => Dtype::I64,
            "float16" | "f16" | "half" => Dtype::F16,
            "bfloat16" | "bf16" => Dtype::BF16,
            "float32" | "f32" | "float" => Dtype::F32,
            _ => {
                return Err(Error::invalid(
                    "dtype",
                    format!("unknown dtype '{s}'; expected one of bool, uint8, uint32, int32, int64, float16, bfloat16, float32"),
                ))
            }
        })
    }

    /// MLX's promotion of two operand types (`mlx.core.promote_types`).
    pub fn promote(a: Dtype, b: Dtype) -> Dtype {
        use Dtype::*;
        if a == b {
            return a;
        }
        match (a, b) {
            (Bool, x) | (x, Bool) => x,
            (F16, BF16) | (BF16, F16) => F32,
            (F32, _) | (_, F32) => F32,
            (F16, _) | (_, F16) => F16,
            (BF16, _) | (_, BF16) => BF16,
            // integers only from here
            (I64, _) | (_, I64) => I64,
            (U32, I32) | (I32, U32) => I64,
            (I32, U8) | (U8, I32) => I32,
            (U32, U8) | (U8, U32) => U32,
            _ => unreachable!("all integer pairs covered"),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that can be an array element.
pub trait Element: Copy + Send + Sync + bytemuck::Pod + 'static {
    const DTYPE: Dtype;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

macro_rules! element_num {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: Dtype = Dtype::$d;
            #[inline(always)]
            fn to_f32(self) -> f32 {
                self as f32
            }
            #[inline(always)]
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
        }
    };
}
element_num!(u8, U8);
element_num!(u32, U32);
element_num!(i32, I32);
element_num!(i64, I64);
element_num!(f32, F32);

impl Element for f16 {
    const DTYPE: Dtype = Dtype::F16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
}
impl Element for bf16 {
    const DTYPE: Dtype = Dtype::BF16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
}

/// `bool` is stored as one byte, 0 or 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(transparent)]
pub struct Bool8(pub u8);
impl Element for Bool8 {
    const DTYPE: Dtype = Dtype::Bool;
    fn to_f32(self) -> f32 {
        self.0 as f32
    }
    fn from_f32(v: f32) -> Self {
        Bool8((v != 0.0) as u8)
    }
    fn to_f64(self) -> f64 {
        self.0 as f64
    }
    fn from_f64(v: f64) -> Self {
        Bool8((v != 0.0) as u8)
    }
}

/// Runs `$body` with `$T` bound to the Rust element type of `$dtype`.
#[macro_export]
macro_rules! dispatch_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::Dtype::Bool => {
                type $T = $crate::dtype::Bool8;
                $body
            }
            $crate::Dtype::U8 => {
                type $T = u8;
                $body
            }
            $crate::Dtype::U32 => {
                type $T = u32;
                $body
            }
            $crate::Dtype::I32 => {
                type $T = i32;
                $body
            }
            $crate::Dtype::I64 => {
                type $T = i64;
                $body
            }
            $crate::Dtype::F16 => {
                type $T = $crate::f16;
                $body
            }
            $crate::Dtype::BF16 => {
                type $T = $crate::bf16;
                $body
            }
            $crate::Dtype::F32 => {
                type $T = f32;
                $body
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Dtype::*;
    use super::*;

    #[test]
    fn promotion_matches_mlx() {
        // Values from mlx.core.promote_types (MLX 0.32).
        let cases = [
            (I32, F32, F32),
            (I64, F16, F16),
            (F16, BF16, F32),
            (U8, I32, I32),
            (U32, I32, I64),
            (U32, I64, I64),
            (Bool, U8, U8),
            (Bool, BF16, BF16),
            (U8, U32, U32),
            (BF16, F32, F32),
        ];
        for (a, b, want) in cases {
            assert_eq!(Dtype::promote(a, b), want, "{a} + {b}");
            assert_eq!(Dtype::promote(b, a), want, "{b} + {a}");
        }
    }

    #[test]
    fn parse_round_trips() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::parse(d.name()).unwrap(), d);
        }
        assert!(Dtype::parse("float64")
            .unwrap_err()
            .to_string()
            .contains("float64"));
    }
}
