//! GGML tensor types: ids, block sizes and bytes per block (as in gguf-py's `GGML_QUANT_SIZES`).

/// A GGML tensor type as stored in a GGUF tensor table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types, missing_docs)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
    /// An id this reader does not know; such tensors are listed but cannot be loaded.
    Unknown(u32),
}

use GgmlType::*;

const KNOWN: [(u32, GgmlType, usize, usize); 34] = [
    // (id, type, elements per block, bytes per block)
    (0, F32, 1, 4),
    (1, F16, 1, 2),
    (2, Q4_0, 32, 18),
    (3, Q4_1, 32, 20),
    (6, Q5_0, 32, 22),
    (7, Q5_1, 32, 24),
    (8, Q8_0, 32, 34),
    (9, Q8_1, 32, 40),
    (10, Q2_K, 256, 84),
    (11, Q3_K, 256, 110),
    (12, Q4_K, 256, 144),
    (13, Q5_K, 256, 176),
    (14, Q6_K, 256, 210),
    (15, Q8_K, 256, 292),
    (16, IQ2_XXS, 256, 66),
    (17, IQ2_XS, 256, 74),
    (18, IQ3_XXS, 256, 98),
    (19, IQ1_S, 256, 50),
    (20, IQ4_NL, 32, 18),
    (21, IQ3_S, 256, 110),
    (22, IQ2_S, 256, 82),
    (23, IQ4_XS, 256, 136),
    (24, I8, 1, 1),
    (25, I16, 1, 2),
    (26, I32, 1, 4),
    (27, I64, 1, 8),
    (28, F64, 1, 8),
    (29, IQ1_M, 256, 56),
    (30, BF16, 1, 2),
    (34, TQ1_0, 256, 54),
    (35, TQ2_0, 256, 66),
    (39, MXFP4, 32, 17),
    (40, NVFP4, 64, 36),
    (41, Q1_0, 128, 18),
];

impl GgmlType {
    /// The type with GGML id `id`.
    pub fn from_id(id: u32) -> GgmlType {
        KNOWN
            .iter()
            .find(|k| k.0 == id)
            .map_or(Unknown(id), |k| k.1)
    }

    /// The GGML id.
    pub fn id(self) -> u32 {
        match self {
            Unknown(id) => id,
            t => KNOWN.iter().find(|k| k.1 == t).map_or(u32::MAX, |k| k.0),
        }
    }

    /// (elements per block, bytes per block), `None` for an unknown id.
    pub fn block(self) -> Option<(usize, usize)> {
        KNOWN.iter().find(|k| k.1 == self).map(|k| (k.2, k.3))
    }

    /// The bit width of the affine import of a quantized block type (`None` for types that are
    /// not imported as affine: float, integer, codebook and other types).
    pub fn affine_bits(self) -> Option<usize> {
        Some(match self {
            Q2_K => 2,
            Q3_K => 3,
            Q4_0 | Q4_1 | Q4_K => 4,
            Q5_0 | Q5_1 | Q5_K => 5,
            Q6_K => 6,
            Q8_0 => 8,
            _ => return None,
        })
    }

    /// The affine group size of the import: one group per GGUF (sub-)block scale.
    pub fn affine_group(self) -> Option<usize> {
        Some(match self {
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K => 32,
            Q2_K | Q3_K | Q6_K => 16,
            _ => return None,
        })
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unknown(id) => write!(f, "unknown GGML type {id}"),
            t => write!(f, "{t:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for k in KNOWN {
            assert_eq!(GgmlType::from_id(k.0), k.1);
            assert_eq!(k.1.id(), k.0);
        }
        assert_eq!(GgmlType::from_id(4), Unknown(4));
        assert_eq!(Unknown(4).to_string(), "unknown GGML type 4");
        assert_eq!(Q4_K.to_string(), "Q4_K");
    }
}
