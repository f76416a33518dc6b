//! Shapes, strides, axes and broadcasting rules.

use crate::error::{Error, Result};
use smallvec::SmallVec;

/// Dimensions of an array, outermost first.
pub type Shape = SmallVec<[usize; 4]>;
/// Element strides (may be 0 for broadcast axes, negative for reversed slices).
pub type Strides = SmallVec<[isize; 4]>;

/// Number of elements of `shape`.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major (C order) strides of `shape`.
pub fn row_major_strides(shape: &[usize]) -> Strides {
    let mut s: Strides = smallvec::smallvec![0; shape.len()];
    let mut acc = 1isize;
    for i in (0..shape.len()).rev() {
        s[i] = acc;
        acc *= shape[i].max(1) as isize;
    }
    s
}

/// Whether (shape, strides) lays elements out densely in row-major order (an empty array
/// always does: it has no elements to misplace).
pub fn is_row_contiguous(shape: &[usize], strides: &[isize]) -> bool {
    if shape.contains(&0) {
        return true;
    }
    let mut expect = 1isize;
    for i in (0..shape.len()).rev() {
        if shape[i] == 1 {
            continue;
        }
        if strides[i] != expect {
            return false;
        }
        expect *= shape[i] as isize;
    }
    true
}

/// `(2, 3)` style formatting used in error messages (NumPy's tuple form).
pub fn fmt_shape(shape: &[usize]) -> String {
    match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// Turns a possibly negative axis into an index, or says why not.
pub fn normalize_axis(op: &'static str, axis: i32, ndim: usize) -> Result<usize> {
    let n = ndim as i32;
    if axis < -n || axis >= n {
        return Err(Error::invalid(
            op,
            format!("axis {axis} is out of bounds for array of dimension {ndim}"),
        ));
    }
    Ok(if axis < 0 {
        (axis + n) as usize
    } else {
        axis as usize
    })
}

/// Normalizes a list of axes; rejects repeats. An empty list stays empty.
pub fn normalize_axes(op: &'static str, axes: &[i32], ndim: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let ax = normalize_axis(op, a, ndim)?;
        if out.contains(&ax) {
            return Err(Error::invalid(op, format!("repeated axis {a} in {axes:?}")));
        }
        out.push(ax);
    }
    out.sort_unstable();
    Ok(out)
}

/// NumPy broadcasting of two shapes.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Shape> {
    let n = a.len().max(b.len());
    let mut out: Shape = smallvec::smallvec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::invalid(
                op,
                format!(
                    "shapes {} and {} cannot be broadcast",
                    fmt_shape(a),
                    fmt_shape(b)
                ),
            ));
        };
    }
    Ok(out)
}

/// Strides that view an array of `shape`/`strides` as `target` (broadcast axes get stride 0).
pub fn broadcast_strides(shape: &[usize], strides: &[isize], target: &[usize]) -> Strides {
    let off = target.len() - shape.len();
    let mut out: Strides = smallvec::smallvec![0; target.len()];
    for i in 0..shape.len() {
        out[i + off] = if shape[i] == 1 && target[i + off] != 1 {
            0
        } else {
            strides[i]
        };
    }
    out
}

/// Resolves one `-1` in a reshape target against `size` elements.
pub fn resolve_reshape(op: &'static str, from: &[usize], to: &[i64]) -> Result<Shape> {
    let size = numel(from);
    let mut infer = None;
    let mut known = 1usize;
    let mut out: Shape = Shape::with_capacity(to.len());
    for (i, &d) in to.iter().enumerate() {
        if d == -1 {
            if infer.is_some() {
                return Err(Error::invalid(op, "can only infer one dimension (-1)"));
            }
            infer = Some(i);
            out.push(0);
        } else if d < 0 {
            return Err(Error::invalid(
                op,
                format!("invalid dimension {d} in {to:?}"),
            ));
        } else {
            known *= d as usize;
            out.push(d as usize);
        }
    }
    if let Some(i) = infer {
        if known == 0 || !size.is_multiple_of(known) {
            return Err(Error::invalid(
                op,
                format!(
                    "cannot reshape array of shape {} into {to:?}",
                    fmt_shape(from)
                ),
            ));
        }
        out[i] = size / known;
    } else if known != size {
        return Err(Error::invalid(
            op,
            format!(
                "cannot reshape array of size {size} with shape {} into shape {}",
                fmt_shape(from),
                fmt_shape(&out)
            ),
        ));
    }
    Ok(out)
}

/// Strides for viewing (shape, strides) as `new_shape` without copying, if possible
/// (NumPy's `_attempt_nocopy_reshape`).
pub fn reshape_strides(shape: &[usize], strides: &[isize], new_shape: &[usize]) -> Option<Strides> {
    if numel(shape) == 0 {
        return Some(row_major_strides(new_shape));
    }
    // Drop size-1 axes from the old layout; they constrain nothing.
    let old: Vec<(usize, isize)> = shape
        .iter()
        .zip(strides)
        .filter(|(d, _)| **d != 1)
        .map(|(d, s)| (*d, *s))
        .collect();
    let mut out: Strides = smallvec::smallvec![0; new_shape.len()];
    let (mut oi, mut ni) = (0usize, 0usize);
    let (ol, nl) = (old.len(), new_shape.len());
    while ni < nl {
        if new_shape[ni] == 1 {
            out[ni] = 1;
            ni += 1;
            continue;
        }
        if oi >= ol {
            return None;
        }
        let (mut np, mut op) = (new_shape[ni], old[oi].0);
        let (ns, os) = (ni, oi);
        while np != op {
            if np < op {
                ni += 1;
                while ni < nl && new_shape[ni] == 1 {
                    ni += 1;
                }
                if ni >= nl {
                    return None;
                }
                np *= new_shape[ni];
            } else {
                oi += 1;
                if oi >= ol {
                    return None;
                }
                op *= old[oi].0;
            }
        }
        // old axes os..=oi must be mutually contiguous
        for k in os..oi {
            if old[k].1 != old[k + 1].1 * old[k + 1].0 as isize {
                return None;
            }
        }
        // assign strides for new axes ns..=ni from the innermost old stride
        let mut st = old[oi].1;
        for k in (ns..=ni).rev() {
            if new_shape[k] == 1 {
                out[k] = st;
                continue;
            }
            out[k] = st;
            st *= new_shape[k] as isize;
        }
        ni += 1;
        oi += 1;
    }
    if oi != ol {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_arrays_are_row_contiguous() {
        // [3, 0, 5] with row-major strides (zero-size axes count as 1): no element is out of place.
        let shape = [3, 0, 5];
        assert!(is_row_contiguous(&shape, &row_major_strides(&shape)));
        assert!(is_row_contiguous(&[0], &[7]));
        assert!(!is_row_contiguous(&[2, 3], &[1, 2]));
    }

    #[test]
    fn broadcast_rules() {
        assert_eq!(
            broadcast_shapes("t", &[3, 1], &[4]).unwrap().as_slice(),
            &[3, 4]
        );
        assert_eq!(
            broadcast_shapes("t", &[], &[2, 2]).unwrap().as_slice(),
            &[2, 2]
        );
        assert_eq!(
            broadcast_shapes("t", &[0, 1], &[1, 5]).unwrap().as_slice(),
            &[0, 5]
        );
        let e = broadcast_shapes("add", &[2, 3], &[4, 3])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "[add] shapes (2,3) and (4,3) cannot be broadcast");
    }

    #[test]
    fn reshape_infers() {
        assert_eq!(
            resolve_reshape("r", &[2, 6], &[-1, 3]).unwrap().as_slice(),
            &[4, 3]
        );
        assert!(resolve_reshape("r", &[2, 6], &[-1, 5]).is_err());
        assert!(resolve_reshape("r", &[2, 6], &[-1, -1]).is_err());
    }

    #[test]
    fn nocopy_reshape_of_transposed_fails() {
        // (2,3) transposed -> (3,2) with strides (1,3): flattening needs a copy.
        assert!(reshape_strides(&[3, 2], &[1, 3], &[6]).is_none());
        // splitting an axis of a transposed view is fine
        assert_eq!(
            reshape_strides(&[4, 2], &[1, 4], &[2, 2, 2])
                .unwrap()
                .as_slice(),
            &[2, 1, 4]
        );
    }

    proptest! {
        #[test]
        fn broadcast_is_symmetric(a in proptest::collection::vec(1usize..4, 0..4), b in proptest::collection::vec(1usize..4, 0..4)) {
            let ab = broadcast_shapes("t", &a, &b).ok();
            let ba = broadcast_shapes("t", &b, &a).ok();
            prop_assert_eq!(ab, ba);
        }

        #[test]
        fn contiguous_reshape_always_views(shape in proptest::collection::vec(1usize..5, 1..5)) {
            let n = numel(&shape);
            let st = row_major_strides(&shape);
            let r = reshape_strides(&shape, &st, &[n]).unwrap();
            prop_assert_eq!(r.as_slice(), &[1isize]);
        }
    }
}
