//! `eval`: walk the graph once in dependency order and run each node on its stream's backend.

use crate::array::{Array, ArrayData, Inputs};
use crate::backend::backend_for;
use crate::device::DeviceType;
use crate::error::{Error, Result};
use crate::primitive::{OutputSpec, Primitive, ViewOp};
use crate::shape::{broadcast_strides, reshape_strides};
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;

/// One evaluation at a time: nodes are filled exactly once, and `async_eval` work is ordered
/// before a later `eval` of the same arrays. Re-entrant, so a caller can hold it across several
/// evaluations (a CUDA graph recording must see no other thread's work).
static EVAL_OWNER: Mutex<(Option<ThreadId>, usize)> = Mutex::new((None, 0));
static EVAL_FREED: Condvar = Condvar::new();

struct EvalGuard;

impl Drop for EvalGuard {
    fn drop(&mut self) {
        let mut g = EVAL_OWNER.lock().unwrap_or_else(|e| e.into_inner());
        g.1 -= 1;
        if g.1 == 0 {
            g.0 = None;
            EVAL_FREED.notify_all();
        }
    }
}

/// Runs `f` holding the evaluation lock (re-entrant on this thread): no other thread
/// evaluates anything until it returns.
pub fn with_eval_lock<T>(f: impl FnOnce() -> T) -> T {
    let me = std::thread::current().id();
    {
        let mut g = EVAL_OWNER.lock().unwrap_or_else(|e| e.into_inner());
        while g.0.is_some_and(|o| o != me) {
            g = EVAL_FREED.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.0 = Some(me);
        g.1 += 1;
    }
    let _guard = EvalGuard;
    f()
}

/// Computes `arrays` and everything they depend on that is not yet computed.
pub fn eval(arrays: &[Array]) -> Result<()> {
    if arrays.iter().all(|a| a.is_evaluated()) {
        return Ok(());
    }
    with_eval_lock(|| eval_locked(arrays))
}

fn eval_locked(arrays: &[Array]) -> Result<()> {
    for node in topo_order(arrays) {
        let Some((prim, inputs)) = node.take_pending() else {
            continue;
        };
        let at_site = |e| match e {
            e @ Error::Eval { .. } => e,
            e => Error::Eval {
                source: Box::new(e),
                site: node.site(),
            },
        };
        if node.sibling_specs().is_empty() {
            let data = run(&node, &prim, inputs).map_err(at_site)?;
            node.set_data(data);
        } else {
            let mut outs = run_multi(&node, &prim, inputs).map_err(at_site)?;
            let rest = outs.split_off(1);
            node.set_data(outs.pop().expect("one output at least"));
            node.set_sibling_data(rest);
        }
    }
    Ok(())
}

/// Starts evaluating `arrays` on a background thread and returns at once; a later `eval`,
/// `item` or `to_vec` waits for it (mlx-lm uses this to build step n+1 while step n runs).
pub fn async_eval(arrays: &[Array]) {
    let arrays = arrays.to_vec();
    std::thread::spawn(move || {
        // Errors resurface when the caller evaluates the same arrays again.
        let _ = eval(&arrays);
    });
}

/// Hashes node ids (addresses, distinct by construction) with one multiply: the graph walk
/// hashes every node, and SipHash showed up in profiles of small-op chains.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, id: usize) {
        // addresses are 8-aligned: fold the high bits down so hashbrown's top bits vary
        let h = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

/// Unevaluated nodes reachable from `roots`, inputs before users, without recursion.
fn topo_order(roots: &[Array]) -> Vec<Array> {
    let mut order = Vec::new();
    let mut seen: HashSet<usize, BuildHasherDefault<IdHasher>> = HashSet::default();
    // (node, inputs_pushed)
    let mut stack: Vec<(Array, bool)> = roots.iter().rev().map(|a| (a.clone(), false)).collect();
    while let Some((a, expanded)) = stack.pop() {
        if a.is_evaluated() {
            continue;
        }
        if expanded {
            order.push(a);
            continue;
        }
        if !seen.insert(a.id()) {
            continue;
        }
        let at = stack.len();
        a.for_each_pending_input_rev(|i| {
            if !i.is_evaluated() && !seen.contains(&i.id()) {
                stack.push((i.clone(), false));
            }
        });
        // the node goes below its inputs: it is emitted once they are
        stack.insert(at, (a, true));
    }
    order
}

fn run(node: &Array, prim: &Primitive, inputs: Inputs) -> Result<ArrayData> {
    if let Primitive::View(ViewOp::Sibling { index }) = prim {
        // taken, not cloned: the multi-output node keeps no second handle on the buffer
        return inputs[0].take_sibling(*index);
    }
    let mut datas: Vec<ArrayData> = inputs.iter().map(|a| a.data()).collect::<Result<_>>()?;
    if prim.broadcasts_inputs() {
        let shape = node.shape();
        for d in datas.iter_mut().filter(|d| d.shape.as_slice() != shape) {
            *d = broadcast_view(d, shape);
        }
    }
    // Drop the input handles now: the graph is freed as it runs, and an input nothing else
    // refers to leaves its buffer uniquely owned by `datas`, so the kernel may reuse it.
    drop(inputs);
    if let Primitive::View(v) = prim {
        return view(node, v, &datas[0]);
    }
    let device = node.stream().device;
    let backend = backend_reading(device, &datas)?;
    let out = OutputSpec {
        shape: node.shape(),
        dtype: node.dtype(),
    };
    let d = backend.eval(device.index, prim, datas, &out)?;
    debug_assert_eq!(
        d.shape.as_slice(),
        node.shape(),
        "{} returned a wrong shape",
        prim.name()
    );
    Ok(d)
}

/// The backend of `device`, with `datas` readable by it: unified memory, so a device result a
/// CPU kernel reads comes back to the host here, once.
fn backend_reading(
    device: crate::device::Device,
    datas: &[ArrayData],
) -> Result<std::sync::Arc<dyn crate::backend::Backend>> {
    if device.kind == DeviceType::Cpu {
        for d in datas {
            d.buffer.ensure_host()?;
        }
    }
    backend_for(device)
}

/// A multi-output node's outputs, in order, from one backend call.
fn run_multi(node: &Array, prim: &Primitive, inputs: Inputs) -> Result<Vec<ArrayData>> {
    let datas: Vec<ArrayData> = inputs.iter().map(|a| a.data()).collect::<Result<_>>()?;
    // as in `run`: an input nothing else holds arrives uniquely owned (donation)
    drop(inputs);
    let device = node.stream().device;
    let backend = backend_reading(device, &datas)?;
    let mut outs = vec![OutputSpec {
        shape: node.shape(),
        dtype: node.dtype(),
    }];
    outs.extend(node.sibling_specs().iter().map(|(s, t)| OutputSpec {
        shape: s,
        dtype: *t,
    }));
    let got = backend.eval_multi(device.index, prim, datas, &outs)?;
    let shapes_ok = got.len() == outs.len()
        && got
            .iter()
            .zip(&outs)
            .all(|(g, o)| g.shape.as_slice() == o.shape && g.dtype == o.dtype);
    if !shapes_ok {
        return Err(Error::runtime(
            prim.name(),
            format!(
                "the backend returned {} outputs of the wrong shapes or dtypes for {}",
                got.len(),
                outs.len()
            ),
        ));
    }
    Ok(got)
}

/// Views share their input's buffer; only reshape of an incompatible layout copies.
fn view(node: &Array, v: &ViewOp, x: &ArrayData) -> Result<ArrayData> {
    let shape = node.shape();
    match v {
        ViewOp::Reshape => {
            if let Some(strides) = reshape_strides(&x.shape, &x.strides, shape) {
                return Ok(ArrayData {
                    shape: shape.into(),
                    strides,
                    ..x.clone()
                });
            }
            if node.stream().device.kind == DeviceType::Cpu {
                x.buffer.ensure_host()?;
            }
            let backend = backend_for(node.stream().device)?;
            let out = OutputSpec {
                shape: &x.shape,
                dtype: x.dtype,
            };
            let c = backend.eval(
                node.stream().device.index,
                &Primitive::Copy,
                vec![x.clone()],
                &out,
            )?;
            Ok(ArrayData {
                shape: shape.into(),
                strides: crate::shape::row_major_strides(shape),
                ..c
            })
        }
        ViewOp::Transpose { perm } => Ok(ArrayData {
            shape: shape.into(),
            strides: perm.iter().map(|&p| x.strides[p]).collect(),
            ..x.clone()
        }),
        ViewOp::Slice { start, step } => {
            let mut offset = x.offset as isize;
            for (i, &s) in start.iter().enumerate() {
                if shape[i] > 0 {
                    offset += s as isize * x.strides[i];
                }
            }
            let strides = step.iter().zip(&x.strides).map(|(st, s)| st * s).collect();
            if offset < 0 {
                return Err(Error::runtime(
                    "slice",
                    "negative offset computed for a view",
                ));
            }
            Ok(ArrayData {
                offset: offset as usize,
                shape: shape.into(),
                strides,
                ..x.clone()
            })
        }
        ViewOp::BroadcastTo => Ok(broadcast_view(x, shape)),
        ViewOp::Bitcast => Ok(ArrayData {
            dtype: node.dtype(),
            ..x.clone()
        }),
        ViewOp::Sibling { .. } => unreachable!("`run` takes siblings before views"),
    }
}

/// `x` seen with `shape` (which it broadcasts to): the same buffer, zero strides on the new axes.
fn broadcast_view(x: &ArrayData, shape: &[usize]) -> ArrayData {
    ArrayData {
        shape: shape.into(),
        strides: broadcast_strides(&x.shape, &x.strides, shape),
        ..x.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{register_backend, Backend};
    use crate::device::{with_device, Device};
    use crate::dtype::Dtype;
    use crate::primitive::F32;
    use std::sync::Arc;

    /// A backend whose one multi-output op hands its input back as output 1 (a donated
    /// buffer, as a KV cache written in place) and a fresh array as output 0.
    struct Passing;

    impl Backend for Passing {
        fn name(&self) -> &'static str {
            "passing"
        }
        fn supports(&self, _: &Primitive) -> bool {
            true
        }
        fn eval(
            &self,
            _: usize,
            p: &Primitive,
            _: Vec<ArrayData>,
            _: &OutputSpec,
        ) -> Result<ArrayData> {
            Err(Error::runtime(
                p.name(),
                "single-output ops are not served here",
            ))
        }
        fn eval_multi(
            &self,
            _: usize,
            _: &Primitive,
            mut inputs: Vec<ArrayData>,
            outs: &[OutputSpec],
        ) -> Result<Vec<ArrayData>> {
            let first = ArrayData::alloc(outs[0].shape, outs[0].dtype)?;
            Ok(vec![first, inputs.remove(0)])
        }
    }

    fn prim() -> Primitive {
        Primitive::RopeKvWrite {
            n_q: 1,
            n_kv: 1,
            dims: 2,
            traditional: false,
            base: F32(1.0),
            scale: F32(1.0),
            has_freqs: false,
            norm: None,
            attend: None,
        }
    }

    /// Outputs of a multi-output node: evaluated by one backend call, each sibling takes its
    /// data (the node keeps no second handle: a donated buffer ends with one owner), and the
    /// shapes are checked.
    #[test]
    fn siblings_own_their_outputs() {
        register_backend(crate::device::DeviceType::Gpu, Arc::new(Passing));
        with_device(Device::gpu(0), || {
            let x = Array::from_slice(&[1f32, 2.0, 3.0], &[3]).unwrap();
            let addr = Arc::as_ptr(&x.data().unwrap().buffer);
            let outs = Array::make_multi(
                vec![([2][..].into(), Dtype::F32), ([3][..].into(), Dtype::F32)],
                prim(),
                [x],
            );
            let [a, b]: [Array; 2] = outs.try_into().map_err(|_| ()).unwrap();
            eval(std::slice::from_ref(&b)).unwrap();
            let bd = b.data().unwrap();
            assert_eq!(
                Arc::as_ptr(&bd.buffer),
                addr,
                "output 1 is the donated input"
            );
            assert_eq!(b.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
            drop(a);
            // the sibling node and `bd` hold the buffer, nothing else
            assert_eq!(Arc::strong_count(&bd.buffer), 2);

            // a backend answering with the wrong shapes is an error, not a wrong array
            let y = Array::from_slice(&[1f32, 2.0], &[2]).unwrap();
            let outs = Array::make_multi(
                vec![([2][..].into(), Dtype::F32), ([5][..].into(), Dtype::F32)],
                prim(),
                [y],
            );
            let e = eval(&outs[1..]).unwrap_err().to_string();
            assert!(e.contains("wrong shapes"), "{e}");
        });
    }
}
