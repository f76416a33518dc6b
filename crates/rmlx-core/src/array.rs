//! `Array`: a cheap, thread-safe handle to a node of the lazy graph.

use crate::buffer::{Buffer, MappedBytes};
use crate::device::{default_stream, Stream};
use crate::dtype::{Dtype, Element};
use crate::error::{Error, Result};
use crate::primitive::Primitive;
use crate::shape::{fmt_shape, is_row_contiguous, numel, row_major_strides, Shape, Strides};
use std::panic::Location;
use std::sync::{Arc, Mutex, OnceLock};

/// Evaluated data: a buffer and the strided layout of this array's elements in it.
#[derive(Clone, Debug)]
pub struct ArrayData {
    pub buffer: Arc<Buffer>,
    /// Offset of element `[0, 0, ...]` in elements of `dtype`.
    pub offset: usize,
    pub shape: Shape,
    pub strides: Strides,
    pub dtype: Dtype,
}

impl ArrayData {
    /// A freshly allocated row-contiguous array, zero-filled.
    pub fn alloc(shape: &[usize], dtype: Dtype) -> Result<ArrayData> {
        let buf = Buffer::alloc(numel(shape) * dtype.size())?;
        Ok(ArrayData::contiguous(Arc::new(buf), shape, dtype))
    }

    /// Like [`ArrayData::alloc`], but the elements are unspecified (zero, or the old values of
    /// a recycled buffer): for kernels that write every element, saving a clearing pass over
    /// the output (a quarter of the memory traffic of `a + b`).
    pub fn alloc_for_overwrite(shape: &[usize], dtype: Dtype) -> Result<ArrayData> {
        let buf = Buffer::alloc_for_overwrite(numel(shape) * dtype.size())?;
        Ok(ArrayData::contiguous(Arc::new(buf), shape, dtype))
    }

    /// A row-contiguous layout over a whole buffer.
    pub fn contiguous(buffer: Arc<Buffer>, shape: &[usize], dtype: Dtype) -> ArrayData {
        ArrayData {
            buffer,
            offset: 0,
            shape: shape.into(),
            strides: row_major_strides(shape),
            dtype,
        }
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn is_contiguous(&self) -> bool {
        is_row_contiguous(&self.shape, &self.strides)
    }

    /// The elements as a typed slice, when the layout is row-contiguous and `T` matches.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        if T::DTYPE != self.dtype || !self.is_contiguous() {
            return None;
        }
        let bytes = self.buffer.as_slice();
        let start = self.offset * self.dtype.size();
        let len = self.numel() * self.dtype.size();
        bytemuck::try_cast_slice(&bytes[start..start + len]).ok()
    }

    /// All bytes of the buffer viewed as `T` (for strided kernels that index with strides and
    /// `offset`).
    pub fn buffer_as<T: Element>(&self) -> &[T] {
        debug_assert_eq!(T::DTYPE.size(), self.dtype.size());
        let bytes = self.buffer.as_slice();
        let n = bytes.len() / std::mem::size_of::<T>();
        bytemuck::cast_slice(&bytes[..n * std::mem::size_of::<T>()])
    }
}

/// A node's inputs: most ops have at most three, kept inside the node (no allocation).
pub(crate) type Inputs = smallvec::SmallVec<[Array; 3]>;

struct Pending {
    prim: Primitive,
    inputs: Inputs,
}

/// A node of the graph: its shape, dtype and stream are known when it is built; its data once
/// evaluated. Evaluation drops the inputs so the graph is freed as it runs.
pub struct Node {
    shape: Shape,
    dtype: Dtype,
    stream: Stream,
    site: &'static Location<'static>,
    data: OnceLock<ArrayData>,
    pending: Mutex<Option<Pending>>,
    /// A multi-output node's further outputs (this node is output 0): their shapes and dtypes,
    /// and their data from evaluation until each [`ViewOp::Sibling`] node takes its own.
    siblings: Option<Box<Siblings>>,
}

/// Outputs 1.. of a multi-output node ([`Array::make_multi`]).
struct Siblings {
    specs: Vec<(Shape, Dtype)>,
    slots: Mutex<Vec<Option<ArrayData>>>,
}

impl Drop for Node {
    // Long chains of unevaluated nodes would otherwise drop recursively and overflow the stack.
    fn drop(&mut self) {
        let Some(p) = self.pending.get_mut().ok().and_then(|p| p.take()) else {
            return;
        };
        let mut stack: Vec<Array> = p.inputs.into_vec();
        while let Some(a) = stack.pop() {
            if let Ok(mut node) = Arc::try_unwrap(a.0) {
                if let Some(p) = node.pending.get_mut().ok().and_then(|p| p.take()) {
                    stack.extend(p.inputs);
                }
            }
        }
    }
}

/// A lazy n-dimensional array. Cloning is cheap (a reference count); arrays are immutable.
#[derive(Clone)]
pub struct Array(pub(crate) Arc<Node>);

impl Array {
    /// A node computed by `prim` from `inputs`, on the current default stream.
    #[track_caller]
    pub fn make(
        shape: Shape,
        dtype: Dtype,
        prim: Primitive,
        inputs: impl IntoIterator<Item = Array>,
    ) -> Array {
        Self::make_on(default_stream(), shape, dtype, prim, inputs)
    }

    #[track_caller]
    pub fn make_on(
        stream: Stream,
        shape: Shape,
        dtype: Dtype,
        prim: Primitive,
        inputs: impl IntoIterator<Item = Array>,
    ) -> Array {
        Self::pending_node(stream, (shape, dtype), prim, inputs, None)
    }

    /// An unevaluated node (with further outputs where `siblings` is given).
    #[track_caller]
    fn pending_node(
        stream: Stream,
        (shape, dtype): (Shape, Dtype),
        prim: Primitive,
        inputs: impl IntoIterator<Item = Array>,
        siblings: Option<Box<Siblings>>,
    ) -> Array {
        let inputs = inputs.into_iter().collect();
        Array(Arc::new(Node {
            shape,
            dtype,
            stream,
            site: Location::caller(),
            data: OnceLock::new(),
            pending: Mutex::new(Some(Pending { prim, inputs })),
            siblings,
        }))
    }

    /// An unevaluated node computed from this one's inputs, on its stream, by `prim` with
    /// `shape` and `dtype`: a fused op built from the op it replaces, once that op has checked
    /// its arguments (`ops::quantized_swiglu` from the gate/up product). `None` once evaluated.
    #[track_caller]
    pub(crate) fn remade(&self, shape: Shape, dtype: Dtype, prim: Primitive) -> Option<Array> {
        let inputs: Vec<Array> = {
            let g = self.0.pending.lock().unwrap_or_else(|e| e.into_inner());
            g.as_ref()?.inputs.to_vec()
        };
        Some(Self::make_on(self.stream(), shape, dtype, prim, inputs))
    }

    /// A node with several outputs, one array per `(shape, dtype)` of `outputs` (at least
    /// one), computed together by one backend call (`Backend::eval_multi`). Output 0 is the
    /// node itself; output i > 0 is a view node ([`ViewOp::Sibling`]) that takes its data from
    /// it, so once every output is evaluated each buffer has one owner (a donated KV cache
    /// stays writable in place).
    #[track_caller]
    pub fn make_multi(
        outputs: Vec<(Shape, Dtype)>,
        prim: Primitive,
        inputs: impl IntoIterator<Item = Array>,
    ) -> Vec<Array> {
        assert!(!outputs.is_empty(), "make_multi needs at least one output");
        let stream = default_stream();
        let mut it = outputs.into_iter();
        let (shape, dtype) = it.next().expect("checked");
        let specs: Vec<(Shape, Dtype)> = it.collect();
        let n = specs.len();
        let siblings = Siblings {
            specs: specs.clone(),
            slots: Mutex::new(vec![None; n]),
        };
        let first = Self::pending_node(
            stream,
            (shape, dtype),
            prim,
            inputs,
            Some(Box::new(siblings)),
        );
        let mut out = Vec::with_capacity(n + 1);
        out.push(first.clone());
        for (i, (shape, dtype)) in specs.into_iter().enumerate() {
            out.push(Self::make_on(
                stream,
                shape,
                dtype,
                Primitive::View(crate::primitive::ViewOp::Sibling { index: i + 1 }),
                [first.clone()],
            ));
        }
        out
    }

    /// Shapes and dtypes of a multi-output node's outputs 1.. (empty for other nodes).
    pub(crate) fn sibling_specs(&self) -> &[(Shape, Dtype)] {
        self.0.siblings.as_ref().map_or(&[], |s| &s.specs)
    }

    /// Stores outputs 1.. of a multi-output node after evaluation.
    pub(crate) fn set_sibling_data(&self, rest: Vec<ArrayData>) {
        if let Some(s) = &self.0.siblings {
            let mut g = s.slots.lock().unwrap_or_else(|e| e.into_inner());
            for (slot, d) in g.iter_mut().zip(rest) {
                *slot = Some(d);
            }
        }
    }

    /// Takes output `index` (> 0) of an evaluated multi-output node: the sibling view's data.
    pub(crate) fn take_sibling(&self, index: usize) -> Result<ArrayData> {
        let taken = self.0.siblings.as_ref().and_then(|s| {
            let mut g = s.slots.lock().unwrap_or_else(|e| e.into_inner());
            g.get_mut(index.wrapping_sub(1)).and_then(Option::take)
        });
        taken.ok_or_else(|| {
            Error::runtime(
                "eval",
                format!("output {index} of a multi-output node is missing (taken twice?)"),
            )
        })
    }

    /// An already evaluated array over `data`.
    #[track_caller]
    pub fn from_data(data: ArrayData) -> Array {
        let data_cell = OnceLock::new();
        let (shape, dtype) = (data.shape.clone(), data.dtype);
        let _ = data_cell.set(data);
        Array(Arc::new(Node {
            shape,
            dtype,
            stream: default_stream(),
            site: Location::caller(),
            data: data_cell,
            pending: Mutex::new(None),
            siblings: None,
        }))
    }

    /// An array holding a copy of `data` with `shape`.
    #[track_caller]
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Array> {
        if numel(shape) != data.len() {
            return Err(Error::invalid(
                "array",
                format!(
                    "{} elements cannot fill shape {}",
                    data.len(),
                    fmt_shape(shape)
                ),
            ));
        }
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let mut buf = Buffer::alloc_for_overwrite(bytes.len())?;
        buf.as_mut_slice().copy_from_slice(bytes);
        Ok(Array::from_data(ArrayData::contiguous(
            Arc::new(buf),
            shape,
            T::DTYPE,
        )))
    }

    /// A 1-D array of `data`.
    #[track_caller]
    pub fn from_vec<T: Element>(data: Vec<T>) -> Array {
        let n = data.len();
        Array::from_slice(&data, &[n]).expect("length matches by construction")
    }

    /// A 0-d array.
    #[track_caller]
    pub fn scalar<T: Element>(v: T) -> Array {
        Array::from_slice(&[v], &[]).expect("one element")
    }

    /// A 0-d array of `dtype` holding `v` (converted as by `astype`).
    #[track_caller]
    pub fn scalar_of(v: f64, dtype: Dtype) -> Array {
        crate::dispatch_dtype!(dtype, T => Array::scalar(<T as Element>::from_f64(v)))
    }

    /// Raw little-endian bytes with a dtype and shape (copied).
    #[track_caller]
    pub fn from_bytes(bytes: &[u8], shape: &[usize], dtype: Dtype) -> Result<Array> {
        if bytes.len() != numel(shape) * dtype.size() {
            return Err(Error::invalid(
                "array",
                format!(
                    "{} bytes cannot hold {} of shape {}",
                    bytes.len(),
                    dtype,
                    fmt_shape(shape)
                ),
            ));
        }
        let mut buf = Buffer::alloc_for_overwrite(bytes.len())?;
        buf.as_mut_slice().copy_from_slice(bytes);
        Ok(Array::from_data(ArrayData::contiguous(
            Arc::new(buf),
            shape,
            dtype,
        )))
    }

    /// A zero-copy array over bytes of a mapped file (`offset` in bytes).
    #[track_caller]
    pub fn from_mapped(
        src: Arc<dyn MappedBytes>,
        offset: usize,
        shape: &[usize],
        dtype: Dtype,
    ) -> Result<Array> {
        let len = numel(shape) * dtype.size();
        let buf = Buffer::mapped(src, offset, len)?;
        // A misaligned mapping would break typed access; copy in that rare case.
        if !offset.is_multiple_of(dtype.size()) {
            return Array::from_bytes(buf.as_slice(), shape, dtype);
        }
        Ok(Array::from_data(ArrayData::contiguous(
            Arc::new(buf),
            shape,
            dtype,
        )))
    }

    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    pub fn ndim(&self) -> usize {
        self.0.shape.len()
    }
    /// Number of elements.
    pub fn size(&self) -> usize {
        numel(&self.0.shape)
    }
    pub fn dtype(&self) -> Dtype {
        self.0.dtype
    }
    pub fn nbytes(&self) -> usize {
        self.size() * self.dtype().size()
    }
    pub fn stream(&self) -> Stream {
        self.0.stream
    }
    /// Where the op that built this array was called.
    pub fn site(&self) -> &'static Location<'static> {
        self.0.site
    }
    /// Dimension `axis` (negative counts from the end); panics when out of range.
    pub fn dim(&self, axis: i32) -> usize {
        let ax = crate::shape::normalize_axis("dim", axis, self.ndim())
            .unwrap_or_else(|e| panic!("{e}"));
        self.0.shape[ax]
    }

    pub fn is_evaluated(&self) -> bool {
        self.0.data.get().is_some()
    }

    /// Whether two handles refer to the same node.
    pub fn same(&self, other: &Array) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// The primitive and inputs of an unevaluated node.
    pub(crate) fn take_pending(&self) -> Option<(Primitive, Inputs)> {
        let mut g = self.0.pending.lock().unwrap_or_else(|e| e.into_inner());
        g.take().map(|p| (p.prim, p.inputs))
    }

    /// Calls `f` with each input of an unevaluated node, last first (for graph walks).
    pub(crate) fn for_each_pending_input_rev(&self, mut f: impl FnMut(&Array)) {
        let g = self.0.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = g.as_ref() {
            p.inputs.iter().rev().for_each(&mut f);
        }
    }

    /// The primitive of an unevaluated node (None once evaluated).
    pub fn primitive(&self) -> Option<Primitive> {
        let g = self.0.pending.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref().map(|p| p.prim.clone())
    }

    pub(crate) fn set_data(&self, d: ArrayData) {
        let _ = self.0.data.set(d);
    }

    /// Evaluates this array (and what it needs).
    pub fn eval(&self) -> Result<()> {
        crate::transforms::eval(std::slice::from_ref(self))
    }

    /// The evaluated data, evaluating first if needed.
    pub fn data(&self) -> Result<ArrayData> {
        if let Some(d) = self.0.data.get() {
            return Ok(d.clone());
        }
        self.eval()?;
        self.0
            .data
            .get()
            .cloned()
            .ok_or_else(|| Error::runtime("eval", "array has no data after evaluation"))
    }

    /// The elements in row-major order, converted to `T` as `astype` would.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        let a = if self.dtype() == T::DTYPE {
            self.clone()
        } else {
            crate::ops::astype(self, T::DTYPE)
        };
        let a = crate::ops::contiguous(&a);
        let d = a.data()?;
        d.buffer.ensure_host()?;
        Ok(d.as_slice::<T>()
            .ok_or_else(|| Error::runtime("to_vec", "layout not contiguous after copy"))?
            .to_vec())
    }

    /// The single element of a one-element array, converted to `T`.
    pub fn item<T: Element>(&self) -> Result<T> {
        if self.size() != 1 {
            return Err(Error::invalid(
                "item",
                format!(
                    "can only convert an array of size 1 to a scalar, got shape {}",
                    fmt_shape(self.shape())
                ),
            ));
        }
        Ok(self.to_vec::<T>()?[0])
    }
}

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Array(shape={}, dtype={}, {})",
            fmt_shape(self.shape()),
            self.dtype(),
            if self.is_evaluated() {
                "evaluated"
            } else {
                "lazy"
            }
        )
    }
}
