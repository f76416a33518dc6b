//! The primitive operations a backend must run. Ops (`ops/*`) are composed from these; views
//! (reshape, transpose, slice, broadcast) are handled by the core and never reach a backend.
//!
//! Adding a primitive: a variant here (no wildcard arms anywhere, so the compiler lists every
//! place to touch), its op in `ops/`, one kernel per backend.

use crate::dtype::Dtype;

/// An f32 that can live in a hashable, comparable primitive (compared by bits).
#[derive(Clone, Copy, Debug)]
pub struct F32(pub f32);
impl PartialEq for F32 {
    fn eq(&self, o: &Self) -> bool {
        self.0.to_bits() == o.0.to_bits()
    }
}
impl Eq for F32 {}
impl std::hash::Hash for F32 {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.to_bits().hash(h)
    }
}

/// An f64 compared by bits (arange bounds, fill values).
#[derive(Clone, Copy, Debug)]
pub struct F64(pub f64);
impl PartialEq for F64 {
    fn eq(&self, o: &Self) -> bool {
        self.0.to_bits() == o.0.to_bits()
    }
}
impl Eq for F64 {}
impl std::hash::Hash for F64 {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.to_bits().hash(h)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Abs,
    Neg,
    Exp,
    Log,
    Log1p,
    Sqrt,
    Rsqrt,
    Square,
    Sin,
    Cos,
    Tan,
    ArcSin,
    ArcCos,
    ArcTan,
    Sinh,
    Cosh,
    Tanh,
    ArcSinh,
    ArcCosh,
    ArcTanh,
    Expm1,
    Log2,
    Log10,
    Sigmoid,
    Erf,
    ErfInv,
    Silu,
    Gelu,
    GeluApprox,
    Floor,
    Ceil,
    Round,
    Sign,
    LogicalNot,
    BitwiseInvert,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Subtract,
    Multiply,
    Divide,
    FloorDivide,
    Power,
    Maximum,
    Minimum,
    Remainder,
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    LogicalAnd,
    LogicalOr,
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
    LeftShift,
    RightShift,
    /// `atan2(a, b)`: the angle of the point `(b, a)`.
    ArcTan2,
    /// `silu(a) * b`: the SwiGLU gate in one pass, rounded once (rmlx's; integers become f32).
    SiluMul,
}

impl BinaryOp {
    /// Comparisons and logical ops produce `bool`.
    pub fn is_predicate(self) -> bool {
        use BinaryOp::*;
        matches!(
            self,
            Equal | NotEqual | Less | LessEqual | Greater | GreaterEqual | LogicalAnd | LogicalOr
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
    Any,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgReduceOp {
    ArgMax,
    ArgMin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScanOp {
    Sum,
    Prod,
    Max,
    Min,
}

/// How a core-handled view derives its layout from its input's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ViewOp {
    /// Same elements in a new shape; copies first when the layout does not allow a view.
    Reshape,
    /// Axes reordered: output axis i is input axis `perm[i]`.
    Transpose { perm: Vec<usize> },
    /// Basic slicing: per axis start and step (the output shape gives the count).
    Slice { start: Vec<usize>, step: Vec<isize> },
    /// NumPy broadcasting to the node's shape.
    BroadcastTo,
    /// The same bytes seen as the node's dtype (of the input's element size).
    Bitcast,
    /// Output `index` (> 0) of the multi-output node that is the input ([`Array::make_multi`]).
    ///
    /// [`Array::make_multi`]: crate::Array::make_multi
    Sibling { index: usize },
}

/// Where `scaled_dot_product_attention` takes its mask from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SdpaMask {
    None,
    /// Causal, aligned to the end of the keys (query i sees keys `..= i + (S - L)`).
    Causal,
    /// A boolean (keep where true) or additive array, the 4th input, broadcastable to
    /// `[B, Hq, L, S]`.
    Array,
}

/// One node's computation. Inputs are the node's input arrays, in the order documented on
/// each variant; the node's shape and dtype are the output's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Primitive {
    /// `[x]`; views handled by the core (reshape may ask the backend for a `Copy`).
    View(ViewOp),
    /// `[x]` → row-contiguous copy.
    Copy,
    /// `[x]` → x converted to the node's dtype.
    AsType,
    /// `[]` → `start + i * step` in the node's dtype (1-D).
    Arange { start: F64, step: F64 },
    /// `[x]` elementwise.
    Unary(UnaryOp),
    /// `[a, b]` elementwise; both already broadcast to the node's shape.
    Binary(BinaryOp),
    /// `[cond, a, b]`, all broadcast to the node's shape.
    Where,
    /// `[x]` reduced over `axes`; the output keeps those axes with size 1.
    Reduce { op: ReduceOp, axes: Vec<usize> },
    /// `[x]` index of the max/min along `axis` (kept, size 1); output u32.
    ArgReduce { op: ArgReduceOp, axis: usize },
    /// `[x]` cumulative op along `axis`.
    Scan {
        op: ScanOp,
        axis: usize,
        reverse: bool,
        inclusive: bool,
    },
    /// `[x]` softmax along the last axis, accumulated in f32.
    Softmax,
    /// `[x]` logsumexp over the last axis (kept, size 1), in f32 for half inputs.
    LogSumExp,
    /// `[a, b]`: `a: [..., M, K] @ b: [..., K, N]` with equal batch shapes (already broadcast).
    Matmul,
    /// `[x0, x1, ...]` joined along `axis`.
    Concatenate { axis: usize },
    /// `[src, update]`: a copy of `src` with `update` written at the strided region
    /// `start`/`step` (the update's shape gives the counts).
    SliceUpdate { start: Vec<usize>, step: Vec<isize> },
    /// `[src, update, start]`: a copy of `src` with `update` (same shape except along `axis`)
    /// written at position `start` (an integer scalar read on the device, clamped so the update
    /// fits) along `axis`. A KV cache written at a position held in device memory lets a
    /// decode step be replayed as a recorded CUDA graph.
    SliceUpdateAt { axis: usize },
    /// `[a, indices]`: `a.take(indices, axis)`; output shape
    /// `a.shape[..axis] + indices.shape + a.shape[axis+1..]`. Negative indices wrap.
    Take { axis: usize },
    /// `[a, indices]` with indices broadcast against `a` except along `axis`.
    TakeAlongAxis { axis: usize },
    /// `[a, indices, values]`: a copy of `a` with `values` written at `indices` along `axis`.
    PutAlongAxis { axis: usize },
    /// `[x]` sorted along `axis` (ascending; NaN last).
    Sort { axis: usize },
    /// `[x]` indices (u32) that sort along `axis` (stable).
    Argsort { axis: usize },
    /// `[x]` indices (u32) with the `kth` element in sorted position along `axis`, smaller
    /// before it, larger after.
    Argpartition { kth: usize, axis: usize },
    /// `[key]` (u32, shape `[2]`): uniformly random u32 bits of the node's shape, from a
    /// counter-based generator (independent of thread count).
    RandomBits,
    /// `[x, weight?]` RMS norm over the last axis; weight `[D]` optional.
    RmsNorm { eps: F32, has_weight: bool },
    /// `[x, weight?, bias?]` layer norm over the last axis.
    LayerNorm {
        eps: F32,
        has_weight: bool,
        has_bias: bool,
    },
    /// `[x, offset, freqs?]`: rotary embedding of the first `dims` features of
    /// `x: [B, ..., L, D]`; offset i32 scalar or `[B]`; `freqs` `[dims/2]` replaces
    /// `base`-derived frequencies.
    Rope {
        dims: usize,
        traditional: bool,
        base: F32,
        scale: F32,
        has_freqs: bool,
        /// eps of an RMS norm applied first (`fast::rms_norm_rope`), its weight the last input:
        /// `[R, D]` for x `[.., R, L, D]` (a row per head) or `[D]`; only where supported.
        norm: Option<F32>,
    },
    /// `[q, k, v, mask?]`: q `[B, Hq, L, D]`, k `[B, Hkv, S, D]`, v `[B, Hkv, S, Dv]`,
    /// `Hq % Hkv == 0` (grouped-query attention).
    ScaledDotProductAttention { scale: F32, mask: SdpaMask },
    /// `[q, lens, k_0, .., k_{B-1}, v_0, .., v_{B-1}]`: one decode query per sequence, q
    /// `[B, Hq, 1, D]`, sequence b attending keys `0..lens[b]` of its own k_b `[1, Hkv, S_b, D]`
    /// and v_b `[1, Hkv, S_b, D]` (`fast::sdpa_rows`; only where a backend supports it).
    SdpaRows { scale: F32 },
    /// `[qkv, pos, freqs?, norm_weight?, k_0, v_0, .., k_{C-1}, v_{C-1}]` → `[q, k_0', v_0', ..]`
    /// (a multi-output node, `fast::rope_kv_write`): a decode step's RoPE and KV cache write.
    /// qkv `[B, 1, n_q + 2 n_kv, D]` (q heads, k heads, v heads); the q and k heads (each
    /// RMS-normalised first by its row of `norm_weight [n_q + n_kv, D]` where `norm` is set) are
    /// rotated at position `pos[b]` (i32 `[B]` or `[1]`), q `[B, n_q, 1, D]` is output 0, and row
    /// b's rotated k and its v are written at position `pos[b]` of its cache: one pair
    /// `[B, n_kv, S, D]` (C = 1) or a pair `[1, n_kv, S_b, D]` per row (C = B). With `attend`
    /// (an attention scale; `fast::rope_kv_sdpa`, C = B) output 0 is instead row b's attention
    /// `[B, n_q, 1, D]` over positions `0..=pos[b]` of its cache after the write.
    RopeKvWrite {
        n_q: usize,
        n_kv: usize,
        dims: usize,
        traditional: bool,
        base: F32,
        scale: F32,
        has_freqs: bool,
        norm: Option<F32>,
        attend: Option<F32>,
    },
    /// `[k, v, pos, k_codes, k_scales, k_biases, v_codes, v_scales, v_biases]` → the six buffers
    /// after the write (a multi-output node, `fast::quantized_kv_write`): a decode step's write
    /// into a quantized KV cache. k and v `[B, H, 1, D]` are quantized as `Quantize` does
    /// (groups of `group_size` along D, `bits` per code) and their codes, scales and biases
    /// written at position `pos[0]` (i32 `[1]`, clamped into the buffers) of axis 2 of the
    /// buffers `[B, H, S, D·bits/32]` (u32) and `[B, H, S, D/group_size]` (k's or v's dtype).
    QuantizedKvWrite { group_size: usize, bits: usize },
    /// `[q, len, k_codes, k_scales, k_biases, v_codes, v_scales, v_biases]` → `[B, Hq, 1, D]`
    /// (`fast::quantized_sdpa_decode`; only where a backend supports it): one query per head
    /// attending positions `0..len[0]` (clamped into `[1, S]`) of a quantized KV cache's packed
    /// rows (as `QuantizedKvWrite` writes them), read in place, with scale `scale`.
    QuantizedSdpaDecode {
        scale: F32,
        group_size: usize,
        bits: usize,
    },
    /// `[w]` MLX affine quantization along the last axis; `part` 0 → packed u32 weights,
    /// 1 → scales, 2 → biases (three nodes, cheap to recompute, keep the graph single-output).
    Quantize {
        group_size: usize,
        bits: usize,
        part: u8,
    },
    /// `[wq, scales, biases]` → floats of the scales' dtype.
    Dequantize { group_size: usize, bits: usize },
    /// `[x, wq, scales, biases, addend?, norm_weight?]`: `x @ dequant(w).T` (transpose) or
    /// `x @ dequant(w)`, plus `addend` (of the output's shape and dtype) where `addend` is set:
    /// the product is rounded to the output dtype, then the sum (`ops::quantized_matmul_add`).
    /// `norm` (eps): x is first `fast::rms_norm(x, norm_weight, eps)` (`[K]`, x's dtype;
    /// `ops::rms_norm_quantized_matmul`), only where the backend supports it.
    /// `exact`: the exact float kernels only (`ops::quantized::exact_decode` when recorded).
    QuantizedMatmul {
        group_size: usize,
        bits: usize,
        transpose: bool,
        exact: bool,
        addend: bool,
        norm: Option<F32>,
    },
    /// `[x, wq, scales, biases, norm_weight?]` → `silu(g) * u` of the halves `[g, u]` of
    /// `x @ dequant(w).T` (`ops::quantized_swiglu`: w `[2H, ..]` a fused gate/up layer, gate rows
    /// first; output `[.., H]`); the product rounded to the output dtype before `silu_mul`, as
    /// the two ops round it. `norm`, `exact`: as `QuantizedMatmul`'s. Only where supported.
    QuantizedSwiglu {
        group_size: usize,
        bits: usize,
        exact: bool,
        norm: Option<F32>,
    },
    /// `[a, b, lhs, rhs]`: `a: [Ba, M, K]`, `b: [Bb, K, N]`, `lhs`, `rhs`: u32 `[B]` →
    /// `[B, M, N]` with `out[i] = a[lhs[i]] @ b[rhs[i]]` (MoE experts picked per row).
    /// `sorted_indices`: `rhs` is sorted (a hint; results do not depend on it).
    GatherMm { sorted_indices: bool },
    /// `[x, wq, scales, biases, lhs, rhs]`: `x: [Bx, M, K]`, `wq: [E, ..]` (as
    /// `QuantizedMatmul`'s), `lhs`, `rhs`: u32 `[B]` → `[B, M, N]` with
    /// `out[i] = quantized_matmul(x[lhs[i]], wq[rhs[i]], ..)`.
    GatherQmm {
        group_size: usize,
        bits: usize,
        transpose: bool,
        sorted_indices: bool,
        exact: bool,
    },
    /// `[logits [T, E]]` → u32 `[T, 2k]`: the `k` experts each row picks (`fast::moe_route`),
    /// their indices in `[.., :k]` and the f32 bits of their weights in `[.., k:]` (one kernel;
    /// `fast::moe_route` hands out the two halves as views).
    MoeRoute { k: usize, routing: MoeRouting },
    /// `[x [T, K], wq, scales, biases (gate), wq, scales, biases (up), indices u32 [T, k]]` →
    /// `[T, k, N]`: `silu(x W_gate[e]ᵀ) * (x W_up[e]ᵀ)` per chosen expert (transposed stacks
    /// `[E, N, ..]`, as `GatherQmm`'s). `exact`: float products only (no int8 x), as
    /// `QuantizedMatmul`'s. `norm` (eps): a 9th input, the weight `[K]` (x's dtype) of an RMS
    /// norm applied to x first (`fast::gather_qmm_swiglu_normed`).
    GatherQmmSwiglu {
        group_size: usize,
        bits: usize,
        exact: bool,
        norm: Option<F32>,
    },
    /// `[h [T, k, K], wq, scales, biases, indices u32 [T, k], weights f32 [T, k], residual?
    /// [T, N]]` → `[T, N]`: `residual + Σ_j weights[t, j] · h[t, j] W[indices[t, j]]ᵀ`.
    GatherQmmWeightedSum {
        group_size: usize,
        bits: usize,
        residual: bool,
    },
}

/// How a mixture-of-experts router turns its logits into expert weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MoeRouting {
    /// Softmax over all experts, keep the top k (Qwen2/3-MoE, OLMoE); `renormalize` rescales
    /// the k weights to sum to 1 (`norm_topk_prob`).
    SoftmaxTopK { renormalize: bool },
    /// Top k logits, then a softmax over those k (Mixtral).
    TopKSoftmax,
    /// Sigmoid of each logit, keep the top k; `renormalize` as above (DeepSeek-V3 style
    /// scoring without group limits or score correction).
    SigmoidTopK { renormalize: bool },
}

impl Primitive {
    /// Element-wise ops whose inputs may have any shape that broadcasts to the output's:
    /// evaluation hands the backend strided views of the output's shape.
    pub fn broadcasts_inputs(&self) -> bool {
        matches!(self, Primitive::Binary(_) | Primitive::Where)
    }

    /// The op name used in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Primitive::View(ViewOp::Reshape) => "reshape",
            Primitive::View(ViewOp::Transpose { .. }) => "transpose",
            Primitive::View(ViewOp::Slice { .. }) => "slice",
            Primitive::View(ViewOp::BroadcastTo) => "broadcast_to",
            Primitive::View(ViewOp::Bitcast) => "view",
            Primitive::View(ViewOp::Sibling { .. }) => "sibling",
            Primitive::Copy => "copy",
            Primitive::AsType => "astype",
            Primitive::Arange { .. } => "arange",
            Primitive::Unary(_) => "unary",
            Primitive::Binary(_) => "binary",
            Primitive::Where => "where",
            Primitive::Reduce { .. } => "reduce",
            Primitive::ArgReduce { .. } => "arg_reduce",
            Primitive::Scan { .. } => "scan",
            Primitive::Softmax => "softmax",
            Primitive::LogSumExp => "logsumexp",
            Primitive::Matmul => "matmul",
            Primitive::Concatenate { .. } => "concatenate",
            Primitive::SliceUpdate { .. } => "slice_update",
            Primitive::SliceUpdateAt { .. } => "slice_update_at",
            Primitive::Take { .. } => "take",
            Primitive::TakeAlongAxis { .. } => "take_along_axis",
            Primitive::PutAlongAxis { .. } => "put_along_axis",
            Primitive::Sort { .. } => "sort",
            Primitive::Argsort { .. } => "argsort",
            Primitive::Argpartition { .. } => "argpartition",
            Primitive::RandomBits => "random_bits",
            Primitive::RmsNorm { .. } => "rms_norm",
            Primitive::LayerNorm { .. } => "layer_norm",
            Primitive::Rope { .. } => "rope",
            Primitive::ScaledDotProductAttention { .. } => "scaled_dot_product_attention",
            Primitive::SdpaRows { .. } => "sdpa_rows",
            Primitive::QuantizedKvWrite { .. } => "quantized_kv_write",
            Primitive::QuantizedSdpaDecode { .. } => "quantized_sdpa_decode",
            Primitive::RopeKvWrite { attend: None, .. } => "rope_kv_write",
            Primitive::RopeKvWrite {
                attend: Some(_), ..
            } => "rope_kv_sdpa",
            Primitive::QuantizedSwiglu { .. } => "quantized_swiglu",
            Primitive::Quantize { .. } => "quantize",
            Primitive::Dequantize { .. } => "dequantize",
            Primitive::QuantizedMatmul { .. } => "quantized_matmul",
            Primitive::GatherMm { .. } => "gather_mm",
            Primitive::GatherQmm { .. } => "gather_qmm",
            Primitive::MoeRoute { .. } => "moe_route",
            Primitive::GatherQmmSwiglu { .. } => "gather_qmm_swiglu",
            Primitive::GatherQmmWeightedSum { .. } => "gather_qmm_weighted_sum",
        }
    }
}

/// What a backend is asked to produce.
#[derive(Clone, Debug)]
pub struct OutputSpec<'a> {
    pub shape: &'a [usize],
    pub dtype: Dtype,
}
