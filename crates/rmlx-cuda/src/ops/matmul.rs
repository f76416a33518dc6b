//! Float GEMM through cuBLASLt: f32 (TF32 off: full-precision products, as the CPU gives),
//! f16 and bf16 with f32 accumulation. Row-major `C = A @ B` is computed as the column-major
//! `Cᵀ = Bᵀ Aᵀ`, so row-major and transposed inputs both go in without a copy.

use crate::alloc::DeviceBuffer;
use crate::context::Gpu;
use crate::data::{contiguous_input, input, output, DevIn};
use cudarc::cublaslt::{result as lt, sys};
use rmlx_core::{ArrayData, Dtype, Error, Result};
use std::ffi::c_void;
use std::sync::Arc;

/// A cuBLASLt handle and its workspace, one per device.
pub(crate) struct BlasLt {
    handle: sys::cublasLtHandle_t,
    workspace: DeviceBuffer,
}
// SAFETY: the handle is used under the device's blas mutex only.
unsafe impl Send for BlasLt {}

const WORKSPACE: usize = 32 << 20;

fn blas_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::runtime("matmul", format!("cuBLASLt {what}: {e:?}"))
}

/// How one operand's matrices sit in memory.
struct Operand {
    dev: DevIn,
    /// Stored transposed relative to row-major (column-major matrices).
    trans: bool,
    ld: i64,
    batch_stride: i64,
    _keep: Option<ArrayData>,
}

/// Describes `x` (`[..., R, C]`, batch already broadcast) as a strided batch of matrices,
/// copying it first when its layout is not one cuBLASLt can read.
fn operand(gpu: &Arc<Gpu>, x: &ArrayData) -> Result<Operand> {
    let nd = x.shape.len();
    let (r, c) = (x.shape[nd - 2], x.shape[nd - 1]);
    let (rs, cs) = (x.strides[nd - 2], x.strides[nd - 1]);
    // the batch axes (sizes > 1) must share one stride pattern: collapse them
    let mut batch: Vec<(usize, isize)> = x.shape[..nd - 2]
        .iter()
        .zip(&x.strides[..nd - 2])
        .filter(|(n, _)| **n > 1)
        .map(|(n, s)| (*n, *s))
        .collect();
    let mut i = batch.len();
    while i > 1 {
        i -= 1;
        if batch[i - 1].1 == batch[i].1 * batch[i].0 as isize {
            batch[i - 1] = (batch[i - 1].0 * batch[i].0, batch[i].1);
            batch.remove(i);
        }
    }
    let layout = if batch.len() > 1 || batch.first().is_some_and(|b| b.1 < 0) {
        None
    } else if cs == 1 && rs >= c.max(1) as isize {
        Some((false, rs as i64))
    } else if rs == 1 && cs >= r.max(1) as isize {
        Some((true, cs as i64))
    } else if r == 1 && cs == 1 {
        Some((false, c.max(1) as i64))
    } else if c == 1 && rs == 1 {
        Some((true, r.max(1) as i64))
    } else {
        None
    };
    match layout {
        Some((trans, ld)) => Ok(Operand {
            dev: input(gpu, x)?,
            trans,
            ld,
            batch_stride: batch.first().map_or(0, |b| b.1 as i64),
            _keep: None,
        }),
        None => {
            let (d, dev) = contiguous_input(gpu, x)?;
            Ok(Operand {
                dev,
                trans: false,
                ld: c.max(1) as i64,
                batch_stride: (r * c) as i64,
                _keep: Some(d),
            })
        }
    }
}

struct Layout(sys::cublasLtMatrixLayout_t);
impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created by create_matrix_layout, destroyed once.
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}

fn layout(
    t: sys::cudaDataType,
    rows: u64,
    cols: u64,
    ld: i64,
    batch: i32,
    stride: i64,
) -> Result<Layout> {
    let l = Layout(lt::create_matrix_layout(t, rows, cols, ld).map_err(|e| blas_err("layout", e))?);
    if batch > 1 {
        // SAFETY: attribute values are of the documented types.
        unsafe {
            lt::set_matrix_layout_attribute(
                l.0,
                sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                &batch as *const i32 as *const c_void,
                4,
            )
            .map_err(|e| blas_err("batch count", e))?;
            lt::set_matrix_layout_attribute(
                l.0,
                sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                &stride as *const i64 as *const c_void,
                8,
            )
            .map_err(|e| blas_err("batch stride", e))?;
        }
    }
    Ok(l)
}

/// `[a, b]`: `a: [..., M, K] @ b: [..., K, N]` with equal batch shapes.
pub fn matmul(gpu: &Arc<Gpu>, a: &ArrayData, b: &ArrayData, od: Dtype) -> Result<ArrayData> {
    let nd = a.shape.len();
    let (m, k, n) = (a.shape[nd - 2], a.shape[nd - 1], b.shape[nd - 1]);
    let mut shape = a.shape.clone();
    shape[nd - 1] = n;
    let dt = match od {
        Dtype::F32 => sys::cudaDataType::CUDA_R_32F,
        Dtype::F16 => sys::cudaDataType::CUDA_R_16F,
        Dtype::BF16 => sys::cudaDataType::CUDA_R_16BF,
        d => {
            return Err(Error::dtype(
                "matmul",
                format!("the GPU multiplies float matrices (f32, f16, bf16), not {d}"),
            ))
        }
    };
    let batch: usize = shape[..nd - 2].iter().product();
    if m * n * batch == 0 || k == 0 {
        // zeros: an empty sum
        let z = crate::ops::elementwise::arange(gpu, 0.0, 0.0, &shape, od)?;
        return Ok(z);
    }
    let (oa, ob) = (operand(gpu, a)?, operand(gpu, b)?);
    let (out, cptr) = output(gpu, &shape, od)?;
    let bi = batch as i32;
    // column-major: C' (N x M) = B' (N x K) * A' (K x M)
    let la = if ob.trans {
        layout(dt, k as u64, n as u64, ob.ld, bi, ob.batch_stride)?
    } else {
        layout(dt, n as u64, k as u64, ob.ld, bi, ob.batch_stride)?
    };
    let lb = if oa.trans {
        layout(dt, m as u64, k as u64, oa.ld, bi, oa.batch_stride)?
    } else {
        layout(dt, k as u64, m as u64, oa.ld, bi, oa.batch_stride)?
    };
    let lc = layout(dt, n as u64, m as u64, n as i64, bi, (m * n) as i64)?;
    gpu.bind()?;
    let mut guard = gpu.blas.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        *guard = Some(BlasLt {
            handle: lt::create_handle().map_err(|e| blas_err("handle", e))?,
            workspace: gpu.alloc.alloc(WORKSPACE)?,
        });
    }
    let bl = guard.as_ref().expect("set above");
    let desc = lt::create_matmul_desc(
        sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        sys::cudaDataType::CUDA_R_32F,
    )
    .map_err(|e| blas_err("descriptor", e))?;
    let run = || -> Result<()> {
        // cublasOperation_t: 0 = N, 1 = T
        let op = |t: bool| t as i32;
        let (ta, tb) = (op(ob.trans), op(oa.trans));
        // SAFETY: attribute values have the documented types; pointers are live device memory
        // of the sizes the layouts describe.
        unsafe {
            lt::set_matmul_desc_attribute(
                desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                &ta as *const _ as *const c_void,
                std::mem::size_of_val(&ta),
            )
            .map_err(|e| blas_err("transa", e))?;
            lt::set_matmul_desc_attribute(
                desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
                &tb as *const _ as *const c_void,
                std::mem::size_of_val(&tb),
            )
            .map_err(|e| blas_err("transb", e))?;
            let pref = lt::create_matmul_pref().map_err(|e| blas_err("preference", e))?;
            let ws = WORKSPACE as u64;
            let r = lt::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const u64 as *const c_void,
                8,
            )
            .and_then(|_| {
                lt::get_matmul_algo_heuristic(bl.handle, desc, la.0, lb.0, lc.0, lc.0, pref)
            });
            let _ = lt::destroy_matmul_pref(pref);
            let heur = r.map_err(|e| blas_err("finding an algorithm", e))?;
            let (alpha, beta) = (1.0f32, 0.0f32);
            lt::matmul(
                bl.handle,
                desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                ob.dev.base() as *const c_void,
                la.0,
                oa.dev.base() as *const c_void,
                lb.0,
                cptr as *const c_void,
                lc.0,
                cptr as *mut c_void,
                lc.0,
                &heur.algo,
                bl.workspace.ptr as *mut c_void,
                WORKSPACE,
                gpu.stream.cu_stream() as *mut _,
            )
            .map_err(|e| blas_err("matmul", e))
        }
    };
    let r = run();
    // SAFETY: created above, destroyed once.
    let _ = unsafe { lt::destroy_matmul_desc(desc) };
    r?;
    Ok(out)
}
