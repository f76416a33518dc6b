//! Element-wise kernels: copy, astype, unary, binary, where, arange. Each (op, dtypes, layout
//! class) is one generated kernel: a grid-stride loop that reads strided inputs (or plain
//! contiguous ones, the fast path) and writes a contiguous output.

use crate::context::Gpu;
use crate::data::{ctype, input, output, tag, DevIn};
use crate::launch::{Args, Grid};
use rmlx_core::primitive::{BinaryOp, UnaryOp};
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::sync::Arc;

/// How a kernel reads an input: plainly (contiguous), as a matrix (two collapsed axes, under
/// 2^32 elements: a column block such as one half of a fused gate/up output, or a column
/// broadcast along rows), or through any strides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Contiguous,
    Rows,
    Strided,
}

impl Access {
    pub fn of(d: &DevIn) -> Access {
        if d.contiguous() {
            Access::Contiguous
        } else if d.lay.ndim == 2 && d.lay.shape[0] * d.lay.shape[1] <= u32::MAX as i64 {
            Access::Rows
        } else {
            Access::Strided
        }
    }
    fn suffix(self) -> &'static str {
        match self {
            Access::Contiguous => "_c",
            Access::Rows => "_r",
            Access::Strided => "_s",
        }
    }
}

/// The read of input `name` (with offset `{name}o` and layout `{name}l`) at row-major index
/// `idx`: direct when contiguous, else through `loc`.
pub(crate) fn read(name: &str, idx: &str, contiguous: bool) -> String {
    let a = if contiguous {
        Access::Contiguous
    } else {
        Access::Strided
    };
    read_as(name, idx, a)
}

fn read_as(name: &str, idx: &str, a: Access) -> String {
    format!("{name}[{}]", offset(name, idx, a, false))
}

/// The element offset of input `name` at row-major index `idx`. Matrix views split `idx` with
/// 32-bit divisions (such layouts hold < 2^32 elements: a 64-bit division is a long software
/// routine per element, which held a gate/up half's SiLU product at 40% of the copy
/// bandwidth); strided views do too where `small` (the caller checked the extents).
fn offset(name: &str, idx: &str, a: Access, small: bool) -> String {
    match a {
        Access::Contiguous => format!("{name}o + {idx}"),
        Access::Rows => format!(
            "{name}o + (i64)((u32){idx} / (u32){name}l.shape[1]) * {name}l.strides[0] + (i64)((u32){idx} % (u32){name}l.shape[1]) * {name}l.strides[1]"
        ),
        Access::Strided if small => format!("{name}o + loc32((u32){idx}, {name}l)"),
        Access::Strided => format!("{name}o + loc({idx}, {name}l)"),
    }
}

/// The kernel computing `y[i] = expr` from values `v0, v1, ...` read from inputs of the given
/// dtypes and access classes: its name and source.
pub fn source(name: &str, ins: &[(Dtype, Access)], od: Dtype, expr: &str) -> (String, String) {
    let mut kname = name.to_string();
    let mut params = String::new();
    let mut loads = String::new();
    for (j, &(dt, a)) in ins.iter().enumerate() {
        kname.push_str(a.suffix());
        params.push_str(&format!(
            "const {t}* __restrict__ x{j}, i64 x{j}o, Lay x{j}l, ",
            t = ctype(dt)
        ));
        loads.push_str(&format!(
            "    {t} v{j} = {r};\n",
            t = ctype(dt),
            r = read_as(&format!("x{j}"), "i", a)
        ));
    }
    let unrolled = ins.iter().all(|&(_, a)| a != Access::Strided);
    let src = if unrolled {
        // UNROLL coalesced elements per thread, all loads issued before the stores: a
        // one-element loop keeps too few bytes in flight to stream at the memory bandwidth
        format!(
            "extern \"C\" __global__ void {kname}({params}{o}* __restrict__ y, i64 n) {{\n  for (i64 b = (i64)blockIdx.x * blockDim.x * {UNROLL} + threadIdx.x; b < n; b += (i64)gridDim.x * blockDim.x * {UNROLL}) {{\n#pragma unroll\n    for (int u = 0; u < {UNROLL}; ++u) {{\n      const i64 i = b + (i64)u * blockDim.x;\n      if (i < n) {{\n{loads}    y[i] = {expr};\n      }}\n    }}\n  }}\n}}\n",
            o = ctype(od)
        )
    } else {
        format!(
            "extern \"C\" __global__ void {kname}({params}{o}* __restrict__ y, i64 n) {{\n  GRID_LOOP(i, n) {{\n{loads}    y[i] = {expr};\n  }}\n}}\n",
            o = ctype(od)
        )
    };
    (kname, src)
}

/// Elements per thread and pass of an all-contiguous element-wise kernel.
const UNROLL: usize = 4;

/// The kernel of [`source`] reading and writing `16 / size` elements per thread with 16-byte
/// loads and stores, for inputs (each read as its own dtype) and an output of one element
/// `size` (2 or 4 bytes), each input contiguous or a matrix with unit column stride (see
/// [`vector_width`]). Element-wise 16-bit kernels moved 2 bytes per load and reached ~40-65% of
/// the copy bandwidth (the SiLU product of an 8B prefill's gate/up halves: 148 µs for 176 MB).
pub fn source_vec(name: &str, ins: &[(Dtype, Access)], t: Dtype, expr: &str) -> (String, String) {
    let w = 16 / t.size();
    let ct = ctype(t);
    let mut kname = format!("{name}_v{w}");
    let mut params = String::new();
    let mut loads = String::new();
    let mut lets = String::new();
    for (j, &(dt, a)) in ins.iter().enumerate() {
        let it = ctype(dt);
        kname.push_str(a.suffix());
        params.push_str(&format!(
            "const {it}* __restrict__ x{j}, i64 x{j}o, Lay x{j}l, "
        ));
        let at = offset(&format!("x{j}"), "i0", a, true);
        loads.push_str(&format!(
            "    union {{ uint4 u; {it} e[{w}]; }} a{j};\n    a{j}.u = *reinterpret_cast<const uint4*>(x{j} + {at});\n"
        ));
        lets.push_str(&format!("      const {it} v{j} = a{j}.e[e];\n"));
    }
    let src = format!(
        "extern \"C\" __global__ void {kname}({params}{ct}* __restrict__ y, i64 n) {{\n  for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < n / {w}; t += (i64)gridDim.x * blockDim.x) {{\n    const i64 i0 = t * {w};\n{loads}    union {{ uint4 u; {ct} e[{w}]; }} r;\n#pragma unroll\n    for (int e = 0; e < {w}; ++e) {{\n{lets}      r.e[e] = {expr};\n    }}\n    *reinterpret_cast<uint4*>(y + i0) = r.u;\n  }}\n}}\n"
    );
    (kname, src)
}

/// Elements per thread of [`source_vec`] for these inputs and an output of `n` elements of
/// dtype `od`, or `None` where its conditions fail: one element size of 2 or 4 bytes, `n` a
/// multiple of the width, every input 16-byte aligned and either contiguous or a view whose
/// innermost axis has unit stride and a length, like every other stride, a multiple of the
/// width (strided views also under 2^32 elements).
fn vector_width(devs: &[DevIn], od: Dtype, n: usize) -> Option<usize> {
    let size = od.size();
    if !(size == 2 || size == 4) {
        return None;
    }
    let w = 16 / size;
    let aligned = |d: &DevIn| (d.ptr as i64 + d.offset * size as i64) % 16 == 0;
    let ok = n.is_multiple_of(w)
        && devs.iter().all(|d| {
            d.dtype.size() == size
                && aligned(d)
                && match Access::of(d) {
                    Access::Contiguous => true,
                    Access::Rows => {
                        let l = &d.lay;
                        l.strides[1] == 1
                            && l.shape[1] % w as i64 == 0
                            && l.strides[0] % w as i64 == 0
                    }
                    // a permuted or sliced view whose innermost axis runs in whole vectors
                    // (e.g. attention heads transposed back to [B, L, H, D]): 32-bit indexing
                    Access::Strided => {
                        let (l, nd) = (&d.lay, d.lay.ndim as usize);
                        nd >= 1
                            && n <= u32::MAX as usize
                            && l.strides[nd - 1] == 1
                            && l.shape[nd - 1] % w as i64 == 0
                            && l.strides[..nd - 1].iter().all(|s| s % w as i64 == 0)
                    }
                }
        });
    ok.then_some(w)
}

/// Whether element-wise kernels may take the 16-byte vector form (`RMLX_EW_VEC=0`: never, an
/// ablation switch).
fn vectorized() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::env::flag(&ON, "RMLX_EW_VEC", true)
}

/// Runs a generated element-wise kernel over `ins` (already broadcast to `out_shape`).
fn run(
    gpu: &Arc<Gpu>,
    name: &str,
    ins: &[&ArrayData],
    out_shape: &[usize],
    out_dtype: Dtype,
    expr: &str,
) -> Result<ArrayData> {
    let devs: Vec<DevIn> = ins.iter().map(|x| input(gpu, x)).collect::<Result<_>>()?;
    let (out, yptr) = output(gpu, out_shape, out_dtype)?;
    let n = out.numel();
    if n == 0 {
        return Ok(out);
    }
    let kinds: Vec<(Dtype, Access)> = devs.iter().map(|d| (d.dtype, Access::of(d))).collect();
    // elements per thread: a 16-byte vector, else UNROLL coalesced ones, else one (strided)
    let ((kname, src), per_thread) =
        match vector_width(&devs, out_dtype, n).filter(|_| vectorized()) {
            Some(w) => (source_vec(name, &kinds, out_dtype, expr), w),
            None if kinds.iter().all(|&(_, a)| a != Access::Strided) => {
                (source(name, &kinds, out_dtype, expr), UNROLL)
            }
            None => (source(name, &kinds, out_dtype, expr), 1),
        };
    let f = gpu.kernels.get(&gpu.ctx, &kname, &src)?;
    let mut a = Args::new();
    for d in &devs {
        a.ptr(d.ptr).i64(d.offset).push(d.lay);
    }
    a.ptr(yptr).i64(n as i64);
    gpu.launch(&f, &kname, Grid::elems(n.div_ceil(per_thread)), &mut a)?;
    Ok(out)
}

/// The expression converting value `v` of dtype `s` to dtype `d` with the CPU's rules.
pub fn cast_expr(v: &str, s: Dtype, d: Dtype) -> String {
    if s == d {
        return v.to_string();
    }
    match d {
        Dtype::Bool => format!("(boolean)nonzero({v})"),
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => {
            format!("from_f<{}>(to_f({v}))", ctype(d))
        }
        _ if s.is_float() => format!("from_d<{}>(to_d({v}))", ctype(d)),
        _ => format!("({})to_i({v})", ctype(d)),
    }
}

/// A row-contiguous copy of `x` converted to `dtype` (`Copy` and `AsType`).
pub fn copy(gpu: &Arc<Gpu>, x: &ArrayData, dtype: Dtype) -> Result<ArrayData> {
    let name = format!("copy_{}_{}", tag(x.dtype), tag(dtype));
    run(
        gpu,
        &name,
        &[x],
        &x.shape,
        dtype,
        &cast_expr("v0", x.dtype, dtype),
    )
}

fn op_name<T: std::fmt::Debug>(op: T) -> String {
    format!("{op:?}").to_lowercase()
}

pub fn unary(gpu: &Arc<Gpu>, x: &ArrayData, op: UnaryOp, od: Dtype) -> Result<ArrayData> {
    let expr = unary_expr(op, x.dtype)?;
    let name = format!("un_{}_{}", op_name(op), tag(x.dtype));
    run(gpu, &name, &[x], &x.shape, od, &expr)
}

pub(crate) fn unary_expr(op: UnaryOp, t: Dtype) -> Result<String> {
    use UnaryOp::*;
    let ct = ctype(t);
    if t.is_float() {
        let f = "to_f(v0)";
        let e = match op {
            Abs => format!("fabsf({f})"),
            Neg => format!("-{f}"),
            Exp => format!("expf({f})"),
            Log => format!("logf({f})"),
            Log1p => format!("log1pf({f})"),
            Sqrt => format!("sqrtf({f})"),
            Rsqrt => format!("1.0f / sqrtf({f})"),
            Square => format!("{f} * {f}"),
            Sin => format!("sinf({f})"),
            Cos => format!("cosf({f})"),
            Tanh => format!("tanhf({f})"),
            Tan => format!("tanf({f})"),
            ArcSin => format!("asinf({f})"),
            ArcCos => format!("acosf({f})"),
            ArcTan => format!("atanf({f})"),
            Sinh => format!("sinhf({f})"),
            Cosh => format!("coshf({f})"),
            ArcSinh => format!("asinhf({f})"),
            ArcCosh => format!("acoshf({f})"),
            ArcTanh => format!("atanhf({f})"),
            Expm1 => format!("expm1f({f})"),
            Log2 => format!("log2f({f})"),
            Log10 => format!("log10f({f})"),
            Sigmoid => format!("sigmoid_f({f})"),
            Erf => format!("erff({f})"),
            ErfInv => format!("erfinvf({f})"),
            Silu => format!("{f} * sigmoid_f({f})"),
            Gelu => format!("0.5f * {f} * (1.0f + erff({f} * 0.70710678118654752f))"),
            GeluApprox => format!(
                "0.5f * {f} * (1.0f + tanhf(0.7978845608f * ({f} + 0.044715f * {f} * {f} * {f})))"
            ),
            Floor => format!("floorf({f})"),
            Ceil => format!("ceilf({f})"),
            Round => format!("rintf({f})"),
            Sign => format!("({f} > 0.0f ? 1.0f : ({f} < 0.0f ? -1.0f : 0.0f))"),
            LogicalNot | BitwiseInvert => {
                return Err(Error::dtype(
                    "cuda",
                    format!("{op:?} is not defined for floats"),
                ))
            }
        };
        return Ok(format!("from_f<{ct}>({e})"));
    }
    if t == Dtype::Bool {
        return match op {
            LogicalNot | BitwiseInvert => Ok("(boolean)(v0 == 0)".into()),
            Abs | Square | Sign | Floor | Ceil | Round => Ok("v0".into()),
            _ => Err(Error::dtype(
                "cuda",
                format!("{op:?} is not defined for bool"),
            )),
        };
    }
    let signed = matches!(t, Dtype::I32 | Dtype::I64);
    Ok(match op {
        Abs if signed => format!("(v0 < 0 ? ({ct})(0ULL - (u64)v0) : v0)"),
        Abs => "v0".into(),
        Neg => format!("({ct})(0ULL - (u64)v0)"),
        Square => format!("({ct})((u64)v0 * (u64)v0)"),
        Sign if signed => format!("({ct})(v0 > 0 ? 1 : (v0 == 0 ? 0 : -1))"),
        Sign => format!("({ct})(v0 > 0 ? 1 : 0)"),
        BitwiseInvert => format!("({ct})(~v0)"),
        Floor | Ceil | Round => "v0".into(),
        _ => {
            return Err(Error::dtype(
                "cuda",
                format!("{op:?} is not defined for {t}"),
            ))
        }
    })
}

pub fn binary(
    gpu: &Arc<Gpu>,
    a: &ArrayData,
    b: &ArrayData,
    op: BinaryOp,
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    if a.dtype != b.dtype {
        return Err(Error::runtime(
            "cuda",
            format!("binary {op:?}: operands {} and {} differ", a.dtype, b.dtype),
        ));
    }
    let expr = binary_expr(op, a.dtype)?;
    let name = format!("bin_{}_{}", op_name(op), tag(a.dtype));
    run(gpu, &name, &[a, b], shape, od, &expr)
}

pub(crate) fn binary_expr(op: BinaryOp, t: Dtype) -> Result<String> {
    use BinaryOp::*;
    let ct = ctype(t);
    if t.is_float() {
        let (x, y) = ("to_f(v0)", "to_f(v1)");
        let cmp = |o: &str| format!("(boolean)({x} {o} {y})");
        let ar = |e: String| format!("from_f<{ct}>({e})");
        return Ok(match op {
            Add => ar(format!("{x} + {y}")),
            Subtract => ar(format!("{x} - {y}")),
            Multiply => ar(format!("{x} * {y}")),
            Divide => ar(format!("{x} / {y}")),
            FloorDivide => ar(format!("floorf({x} / {y})")),
            Power => ar(format!("powf({x}, {y})")),
            Maximum => ar(format!("kmax_f({x}, {y})")),
            Minimum => ar(format!("kmin_f({x}, {y})")),
            Remainder => ar(format!("py_fmod({x}, {y})")),
            ArcTan2 => ar(format!("atan2f({x}, {y})")),
            SiluMul => ar(format!("{x} * sigmoid_f({x}) * {y}")),
            Equal => cmp("=="),
            NotEqual => cmp("!="),
            Less => cmp("<"),
            LessEqual => cmp("<="),
            Greater => cmp(">"),
            GreaterEqual => cmp(">="),
            LogicalAnd => format!("(boolean)({x} != 0.0f && {y} != 0.0f)"),
            LogicalOr => format!("(boolean)({x} != 0.0f || {y} != 0.0f)"),
            BitwiseAnd | BitwiseOr | BitwiseXor | LeftShift | RightShift => {
                return Err(Error::dtype(
                    "cuda",
                    format!("{op:?} is not defined for floats"),
                ))
            }
        });
    }
    let cmp = |o: &str| format!("(boolean)(v0 {o} v1)");
    if t == Dtype::Bool {
        return Ok(match op {
            Add | Maximum | LogicalOr | BitwiseOr => "(boolean)(v0 | v1)".into(),
            Subtract | BitwiseXor => "(boolean)(v0 ^ v1)".into(),
            Multiply | FloorDivide | Divide | Minimum | LogicalAnd | BitwiseAnd => {
                "(boolean)(v0 & v1)".into()
            }
            Remainder => "(boolean)0".into(),
            ArcTan2 | SiluMul => {
                return Err(Error::dtype(
                    "cuda",
                    format!("{op:?} is not defined for bool (the op converts to float)"),
                ))
            }
            Power => "(boolean)(v0 | (v1 ^ 1))".into(),
            LeftShift => "(boolean)(((u8)(v0 << (v1 & 7))) != 0)".into(),
            RightShift => "(boolean)((v0 >> (v1 & 7)) != 0)".into(),
            Equal => cmp("=="),
            NotEqual => cmp("!="),
            Less => cmp("<"),
            LessEqual => cmp("<="),
            Greater => cmp(">"),
            GreaterEqual => cmp(">="),
        });
    }
    let bits = t.size() * 8 - 1;
    Ok(match op {
        Add => format!("({ct})((u64)v0 + (u64)v1)"),
        Subtract => format!("({ct})((u64)v0 - (u64)v1)"),
        Multiply => format!("({ct})((u64)v0 * (u64)v1)"),
        FloorDivide => format!("int_floordiv<{ct}>(v0, v1)"),
        Remainder => format!("int_pmod<{ct}>(v0, v1)"),
        Power => format!("int_pow<{ct}>(v0, v1)"),
        Maximum => "(v0 > v1 ? v0 : v1)".into(),
        Minimum => "(v0 < v1 ? v0 : v1)".into(),
        BitwiseAnd => format!("({ct})(v0 & v1)"),
        BitwiseOr => format!("({ct})(v0 | v1)"),
        BitwiseXor => format!("({ct})(v0 ^ v1)"),
        LeftShift => format!("({ct})((u64)v0 << ((u64)v1 & {bits}))"),
        RightShift => format!("({ct})(v0 >> ((u64)v1 & {bits}))"),
        Equal => cmp("=="),
        NotEqual => cmp("!="),
        Less => cmp("<"),
        LessEqual => cmp("<="),
        Greater => cmp(">"),
        GreaterEqual => cmp(">="),
        LogicalAnd => "(boolean)(v0 != 0 && v1 != 0)".into(),
        LogicalOr => "(boolean)(v0 != 0 || v1 != 0)".into(),
        Divide => format!("from_d<{ct}>(to_d(v0) / to_d(v1))"),
        ArcTan2 | SiluMul => {
            return Err(Error::dtype(
                "cuda",
                format!("{op:?} is not defined for {t} (the op converts to float)"),
            ))
        }
    })
}

pub fn where_(
    gpu: &Arc<Gpu>,
    c: &ArrayData,
    a: &ArrayData,
    b: &ArrayData,
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    let name = format!("where_{}_{}", tag(c.dtype), tag(a.dtype));
    run(gpu, &name, &[c, a, b], shape, od, "(nonzero(v0) ? v1 : v2)")
}

pub fn arange(
    gpu: &Arc<Gpu>,
    start: f64,
    step: f64,
    shape: &[usize],
    od: Dtype,
) -> Result<ArrayData> {
    let (out, yptr) = output(gpu, shape, od)?;
    let n = out.numel();
    if n == 0 {
        return Ok(out);
    }
    let conv = match od {
        Dtype::Bool => "(boolean)(d != 0.0)".to_string(),
        Dtype::F32 => "(float)d".to_string(),
        Dtype::F16 | Dtype::BF16 => format!("from_f<{}>((float)d)", ctype(od)),
        _ => format!("from_d<{}>(d)", ctype(od)),
    };
    let name = format!("arange_{}", tag(od));
    let src = format!(
        "extern \"C\" __global__ void {name}(double start, double step, {o}* y, i64 n) {{\n  GRID_LOOP(i, n) {{\n    double d = start + (double)i * step;\n    y[i] = {conv};\n  }}\n}}\n",
        o = ctype(od)
    );
    let f = gpu.kernels.get(&gpu.ctx, &name, &src)?;
    let mut a = Args::new();
    a.push(start).push(step).ptr(yptr).i64(n as i64);
    gpu.launch(&f, &name, Grid::elems(n), &mut a)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::assert_compiles;
    use rmlx_core::primitive::{BinaryOp, UnaryOp};

    /// Every element-wise kernel the backend can generate compiles with NVRTC for sm_90
    /// (needs only libnvrtc, no GPU).
    #[test]
    fn elementwise_kernels_compile() {
        let mut body = String::new();
        let mut add = |(_, s): (String, String)| body.push_str(&s);
        for s in Dtype::ALL {
            for d in Dtype::ALL {
                add(source(
                    &format!("copy_{}_{}", tag(s), tag(d)),
                    &[(s, Access::Strided)],
                    d,
                    &cast_expr("v0", s, d),
                ));
            }
            for op in [
                UnaryOp::Abs,
                UnaryOp::Neg,
                UnaryOp::Exp,
                UnaryOp::ErfInv,
                UnaryOp::GeluApprox,
                UnaryOp::Sign,
                UnaryOp::Round,
                UnaryOp::Square,
                UnaryOp::LogicalNot,
                UnaryOp::BitwiseInvert,
                UnaryOp::Silu,
                UnaryOp::Tan,
                UnaryOp::ArcSin,
                UnaryOp::ArcCos,
                UnaryOp::ArcTan,
                UnaryOp::Sinh,
                UnaryOp::Cosh,
                UnaryOp::ArcSinh,
                UnaryOp::ArcCosh,
                UnaryOp::ArcTanh,
                UnaryOp::Expm1,
                UnaryOp::Log2,
                UnaryOp::Log10,
            ] {
                if let Ok(e) = unary_expr(op, s) {
                    add(source(
                        &format!("un_{}_{}", op_name(op), tag(s)),
                        &[(s, Access::Contiguous)],
                        s,
                        &e,
                    ));
                }
            }
            for op in [
                BinaryOp::Add,
                BinaryOp::Divide,
                BinaryOp::FloorDivide,
                BinaryOp::Remainder,
                BinaryOp::Power,
                BinaryOp::Maximum,
                BinaryOp::Less,
                BinaryOp::LogicalAnd,
                BinaryOp::LeftShift,
                BinaryOp::RightShift,
                BinaryOp::BitwiseXor,
                BinaryOp::ArcTan2,
                BinaryOp::SiluMul,
            ] {
                if let Ok(e) = binary_expr(op, s) {
                    let od = if op.is_predicate() { Dtype::Bool } else { s };
                    add(source(
                        &format!("bin_{}_{}", op_name(op), tag(s)),
                        &[(s, Access::Rows), (s, Access::Rows)],
                        od,
                        &e,
                    ));
                    add(source(
                        &format!("bin_{}_{}", op_name(op), tag(s)),
                        &[(s, Access::Contiguous), (s, Access::Strided)],
                        od,
                        &e,
                    ));
                    if od == s && matches!(s.size(), 2 | 4) {
                        add(source_vec(
                            &format!("bin_{}_{}", op_name(op), tag(s)),
                            &[(s, Access::Rows), (s, Access::Contiguous)],
                            s,
                            &e,
                        ));
                    }
                }
            }
        }
        // inputs read as their own types beside an output of the same size
        for (a, b) in [
            (Dtype::U32, Dtype::F32),
            (Dtype::I32, Dtype::F32),
            (Dtype::F16, Dtype::BF16),
        ] {
            add(source_vec(
                &format!("copy_{}_{}", tag(a), tag(b)),
                &[(a, Access::Contiguous)],
                b,
                &cast_expr("v0", a, b),
            ));
            add(source_vec(
                &format!("copy_{}_{}", tag(a), tag(b)),
                &[(a, Access::Strided)],
                b,
                &cast_expr("v0", a, b),
            ));
        }
        assert_compiles("elementwise_all", &body);
    }
}
