//! `a[key]` and `a[key] = v` with NumPy's rules: ints, slices, `None`, `...`, and integer
//! arrays (advanced indexing: index arrays broadcast together; their result axes go where the
//! indexed axes were when those are adjacent, else first).
//!
//! Boolean masks follow MLX: `a[mask] = v` (the whole key a bool array, NumPy bool array,
//! list of bools or Python bool, shaped like `a`'s leading axes) writes `v`'s elements in
//! order where the mask is true (`ops::masked_scatter`); reading `a[mask]` is refused with
//! MLX's `ValueError`, since its shape would depend on the mask's values.

use crate::array::PyArray;
use crate::convert::to_array;
use crate::errors::guard;
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyEllipsis, PyInt, PyList, PySlice, PyTuple};
use rmlx::{ops, Array, Dtype};

enum Idx {
    Int(i64),
    /// start, stop, step as Python gave them (None → defaults for the step's sign).
    Slice(Option<i64>, Option<i64>, i64),
    NewAxis,
    Ellipsis,
    Arr(Array),
}

/// MLX's refusal of boolean indices when reading (and inside a tuple key).
fn bool_index_error() -> PyErr {
    PyValueError::new_err(
        "[index] boolean indices are not yet supported (as in MLX): a boolean mask works only \
         as the whole key of an assignment, x[mask] = v; to read, use mx.where",
    )
}

/// The key as a boolean mask, when it is one: a Python bool, a bool array, or a NumPy array
/// or list that converts to bool (as MLX's `extract_boolean_mask`).
fn bool_mask(key: &Bound<'_, PyAny>) -> PyResult<Option<Array>> {
    if key.is_instance_of::<PyBool>() {
        return Ok(Some(Array::scalar(rmlx::dtype::Bool8(
            key.extract::<bool>()? as u8,
        ))));
    }
    if let Ok(a) = key.cast::<PyArray>() {
        let a = a.borrow();
        return Ok((a.inner.dtype() == Dtype::Bool).then(|| a.inner.clone()));
    }
    if key.is_instance_of::<PyList>() || key.hasattr("__array__")? {
        let a = to_array(key, None)?;
        return Ok((a.dtype() == Dtype::Bool).then_some(a));
    }
    Ok(None)
}

fn parse_one(ob: &Bound<'_, PyAny>) -> PyResult<Idx> {
    if ob.is_instance_of::<PyBool>() {
        return Err(bool_index_error());
    }
    if ob.is_none() {
        return Ok(Idx::NewAxis);
    }
    if ob.is_instance_of::<PyEllipsis>() {
        return Ok(Idx::Ellipsis);
    }
    if ob.is_instance_of::<PyInt>() && !ob.is_instance_of::<PyBool>() {
        return Ok(Idx::Int(ob.extract()?));
    }
    if let Ok(s) = ob.cast::<PySlice>() {
        let get = |n: &str| -> PyResult<Option<i64>> {
            let v = s.getattr(n)?;
            if v.is_none() {
                Ok(None)
            } else {
                v.extract().map(Some)
            }
        };
        let step = get("step")?.unwrap_or(1);
        if step == 0 {
            return Err(PyValueError::new_err("slice step cannot be zero"));
        }
        return Ok(Idx::Slice(get("start")?, get("stop")?, step));
    }
    if ob.cast::<PyArray>().is_ok() || ob.is_instance_of::<PyList>() || ob.hasattr("__array__")? {
        let a = to_array(ob, None)?;
        if a.dtype() == Dtype::Bool {
            return Err(bool_index_error());
        }
        if !a.dtype().is_integer() {
            return Err(PyIndexError::new_err(format!(
                "[index] arrays used as indices must be integers, got {}",
                a.dtype()
            )));
        }
        return Ok(Idx::Arr(a));
    }
    Err(PyIndexError::new_err(format!(
        "[index] cannot index with {}; use ints, slices, None, ... or integer arrays",
        ob.get_type().name()?
    )))
}

/// The key as one entry per axis of the (None-expanded) array.
fn parse(x: &Array, key: &Bound<'_, PyAny>) -> PyResult<(Array, Vec<Idx>)> {
    let mut items: Vec<Idx> = if let Ok(t) = key.cast::<PyTuple>() {
        t.iter().map(|k| parse_one(&k)).collect::<PyResult<_>>()?
    } else {
        vec![parse_one(key)?]
    };
    let consuming = items
        .iter()
        .filter(|i| !matches!(i, Idx::NewAxis | Idx::Ellipsis))
        .count();
    if consuming > x.ndim() {
        return Err(PyIndexError::new_err(format!(
            "[index] too many indices for an array with {} dimensions",
            x.ndim()
        )));
    }
    let full = || Idx::Slice(None, None, 1);
    let fill = x.ndim() - consuming;
    match items.iter().position(|i| matches!(i, Idx::Ellipsis)) {
        Some(p) => {
            items.remove(p);
            if items.iter().any(|i| matches!(i, Idx::Ellipsis)) {
                return Err(PyIndexError::new_err(
                    "[index] an index can only have a single ellipsis ('...')",
                ));
            }
            for _ in 0..fill {
                items.insert(p, full());
            }
        }
        None => items.extend((0..fill).map(|_| full())),
    }
    // `None` entries become unit axes of the array, indexed by a full slice.
    let new_axes: Vec<i32> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(i, Idx::NewAxis))
        .map(|(p, _)| p as i32)
        .collect();
    let x = if new_axes.is_empty() {
        x.clone()
    } else {
        guard(|| ops::expand_dims(x, &new_axes))?
    };
    for i in items.iter_mut() {
        if matches!(i, Idx::NewAxis) {
            *i = full();
        }
    }
    Ok((x, items))
}

fn norm_int(i: i64, dim: usize, axis: usize) -> PyResult<i64> {
    let d = dim as i64;
    let j = if i < 0 { i + d } else { i };
    if !(0..d).contains(&j) {
        return Err(PyIndexError::new_err(format!(
            "[index] index {i} is out of bounds for axis {axis} with size {dim}"
        )));
    }
    Ok(j)
}

/// Basic slicing of every axis: ints become one-element slices. Returns the view and the
/// axes that ints selected.
fn basic(x: &Array, items: &[Idx]) -> PyResult<(Array, Vec<i32>)> {
    let n = x.ndim();
    let (mut start, mut stop, mut step) = (vec![0i64; n], vec![0i64; n], vec![1i64; n]);
    let mut int_axes = Vec::new();
    for (ax, it) in items.iter().enumerate() {
        let dim = x.shape()[ax];
        match it {
            Idx::Int(i) => {
                let j = norm_int(*i, dim, ax)?;
                (start[ax], stop[ax]) = (j, j + 1);
                int_axes.push(ax as i32);
            }
            Idx::Slice(b, e, s) => {
                step[ax] = *s;
                start[ax] = b.unwrap_or(if *s > 0 { 0 } else { i64::MAX });
                stop[ax] = e.unwrap_or(if *s > 0 { i64::MAX } else { i64::MIN });
            }
            Idx::Arr(_) => stop[ax] = i64::MAX,
            Idx::NewAxis | Idx::Ellipsis => unreachable!("removed by parse"),
        }
    }
    let v = guard(|| ops::slice(x, &start, &stop, &step))?;
    Ok((v, int_axes))
}

/// `x[key]`.
pub fn get(x: &Array, key: &Bound<'_, PyAny>) -> PyResult<Array> {
    if !key.is_instance_of::<PyTuple>() && bool_mask(key)?.is_some() {
        return Err(bool_index_error());
    }
    // Fast path for the most common key, one int.
    if key.is_instance_of::<PyInt>() && !key.is_instance_of::<PyBool>() && x.ndim() > 0 {
        let j = norm_int(key.extract()?, x.shape()[0], 0)?;
        return guard(|| {
            let mut start = vec![0i64; x.ndim()];
            let mut stop = vec![i64::MAX; x.ndim()];
            (start[0], stop[0]) = (j, j + 1);
            let v = ops::slice(x, &start, &stop, &vec![1; x.ndim()])?;
            ops::squeeze(&v, &[0])
        });
    }
    let (x, mut items) = parse(x, key)?;
    let has_arr = items.iter().any(|i| matches!(i, Idx::Arr(_)));
    if !has_arr {
        let (v, ints) = basic(&x, &items)?;
        return if ints.is_empty() {
            Ok(v)
        } else {
            guard(|| ops::squeeze(&v, &ints))
        };
    }
    // Advanced: ints act as 0-d index arrays.
    for i in items.iter_mut() {
        if let Idx::Int(v) = i {
            *i = Idx::Arr(Array::scalar(*v));
        }
    }
    let (y, _) = basic(&x, &items)?;
    let adv: Vec<usize> = (0..items.len())
        .filter(|&a| matches!(items[a], Idx::Arr(_)))
        .collect();
    let idx: Vec<Array> = adv
        .iter()
        .map(|&a| match &items[a] {
            Idx::Arr(i) => i.clone(),
            _ => unreachable!(),
        })
        .collect();
    guard(|| gather(&y, &adv, &idx))
}

/// Gathers `y` at the index arrays `idx` of axes `adv` (the other axes taken whole).
fn gather(y: &Array, adv: &[usize], idx: &[Array]) -> rmlx::Result<Array> {
    if adv.len() == 1 {
        return ops::take(y, &idx[0], Some(adv[0] as i32));
    }
    let refs: Vec<&Array> = idx.iter().collect();
    let b = ops::broadcast_arrays("index", &refs)?;
    let bshape = b[0].shape().to_vec();
    // Indexed axes first, then the rest in order, merged into one flat axis.
    let rest: Vec<usize> = (0..y.ndim()).filter(|a| !adv.contains(a)).collect();
    let perm: Vec<i32> = adv.iter().chain(&rest).map(|&a| a as i32).collect();
    let t = ops::transpose(y, Some(&perm))?;
    let mut flat_shape: Vec<i64> = vec![-1];
    flat_shape.extend(rest.iter().map(|&a| y.shape()[a] as i64));
    let t = ops::reshape(&t, &flat_shape)?;
    // Row-major linear index over the indexed axes, each index wrapped if negative.
    let mut lin = Array::scalar(0i64);
    for (k, &a) in adv.iter().enumerate() {
        let dim = y.shape()[a] as i64;
        let i = ops::astype(&b[k], Dtype::I64);
        let i = ops::where_(
            &ops::less(&i, &Array::scalar(0i64))?,
            &ops::add(&i, &Array::scalar(dim))?,
            &i,
        )?;
        lin = ops::add(&ops::multiply(&lin, &Array::scalar(dim))?, &i)?;
    }
    let out = ops::take(&t, &lin, Some(0))?;
    let adjacent = adv.windows(2).all(|w| w[1] == w[0] + 1);
    if !adjacent || adv[0] == 0 {
        return Ok(out);
    }
    // Adjacent indexed axes: the broadcast index axes go where the first indexed axis was.
    let nb = bshape.len();
    let p = adv[0];
    let perm: Vec<i32> = (nb..nb + p)
        .chain(0..nb)
        .chain(nb + p..out.ndim())
        .map(|a| a as i32)
        .collect();
    ops::transpose(&out, Some(&perm))
}

/// `x[mask] = v`: `v`'s elements written in order where `mask` is true. When `v` lists
/// fewer values than the mask may select, the mask is counted first (MLX fails at
/// evaluation then; counting here gives the error at the assignment, and on a GPU too).
fn set_masked(py: Python<'_>, x: &Array, mask: &Array, v: &Array) -> PyResult<Array> {
    let unmasked = x.ndim().saturating_sub(mask.ndim());
    if v.ndim() == unmasked + 1 && v.shape()[0] < mask.size() {
        let (m, n) = (mask.clone(), v.shape()[0]);
        let count =
            py.detach(|| guard(|| ops::sum(&m, None, false).and_then(|s| s.item::<i64>())))?;
        if count as usize > n {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                "[masked_scatter] the mask selects {count} entries but the values hold only {n}"
            )));
        }
        if count == 0 {
            return Ok(x.clone());
        }
    }
    guard(|| ops::masked_scatter(x, mask, v))
}

/// `x[key] = v`: a new array with the region replaced (the Python object is rebound).
pub fn set(x: &Array, key: &Bound<'_, PyAny>, v: &Array) -> PyResult<Array> {
    if let Some(mask) = bool_mask(key)? {
        return set_masked(key.py(), x, &mask, v);
    }
    let (xe, items) = parse(x, key)?;
    let v = ops::astype(v, x.dtype());
    let arrs: Vec<usize> = (0..items.len())
        .filter(|&a| matches!(items[a], Idx::Arr(_)))
        .collect();
    let out = match arrs.as_slice() {
        [] => {
            let (region, ints) = basic(&xe, &items)?;
            let mut start = Vec::with_capacity(items.len());
            let mut step = Vec::with_capacity(items.len());
            for (ax, it) in items.iter().enumerate() {
                let dim = xe.shape()[ax] as i64;
                match it {
                    Idx::Int(i) => {
                        start.push(norm_int(*i, dim as usize, ax)?);
                        step.push(1);
                    }
                    Idx::Slice(b, _, s) => {
                        let b = b.unwrap_or(if *s > 0 { 0 } else { dim - 1 });
                        let b = if b < 0 { b + dim } else { b };
                        start.push(if *s > 0 {
                            b.clamp(0, dim)
                        } else {
                            b.clamp(-1, dim - 1)
                        });
                        step.push(*s);
                    }
                    _ => unreachable!(),
                }
            }
            guard(|| {
                // The value broadcasts to the region without the int axes, then takes its shape.
                let shown: Vec<usize> = (0..region.ndim())
                    .filter(|a| !ints.contains(&(*a as i32)))
                    .map(|a| region.shape()[a])
                    .collect();
                let u = ops::broadcast_to(&v, &shown)?;
                let rs: Vec<i64> = region.shape().iter().map(|&d| d as i64).collect();
                let u = ops::reshape(&u, &rs)?;
                if region.size() == 0 {
                    return Ok(xe.clone());
                }
                ops::slice_update(&xe, &u, &start, &step)
            })?
        }
        [a] if items
            .iter()
            .enumerate()
            .all(|(k, it)| k == *a || matches!(it, Idx::Slice(None, None, 1))) =>
        {
            let Idx::Arr(i) = &items[*a] else {
                unreachable!()
            };
            guard(|| {
                // x[..., idx, ...] = v on one axis: put_along_axis with the index spread over
                // the other axes.
                let mut ishape = vec![1usize; xe.ndim()];
                let n = i.size();
                ishape[*a] = n;
                let ii = ops::reshape(i, &ishape.iter().map(|&d| d as i64).collect::<Vec<_>>())?;
                let mut full = xe.shape().to_vec();
                full[*a] = n;
                let ii = ops::broadcast_to(&ii, &full)?;
                // The value is laid out as x[idx] would be: index axes in place of axis a.
                let mut gshape: Vec<usize> = xe.shape()[..*a].to_vec();
                gshape.extend(i.shape());
                gshape.extend(&xe.shape()[*a + 1..]);
                let u = ops::broadcast_to(&v, &gshape)?;
                let u = ops::reshape(&u, &full.iter().map(|&d| d as i64).collect::<Vec<_>>())?;
                ops::put_along_axis(&xe, &ii, &u, Some(*a as i32))
            })?
        }
        _ => {
            return Err(PyIndexError::new_err(
                "[index] assignment supports ints, slices, None, ... and one integer index \
                 array with the other axes whole; use mx.put_along_axis for other forms",
            ))
        }
    };
    if out.shape() == x.shape() {
        Ok(out)
    } else {
        let s: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
        guard(|| ops::reshape(&out, &s))
    }
}
