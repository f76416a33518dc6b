"""Boolean masks as MLX has them: `x[mask] = v` writes v's elements in order where the mask
is true (masked_scatter); reading `x[mask]` raises ValueError, as in MLX. The expected
behaviour was read off mlx[cpu] 0.32.4 (scripts in the docstrings of each case); NumPy is
the reference for the values where NumPy has the same assignment."""

import numpy as np
import pytest

import rmlx.core as mx

RNG = np.random.default_rng(5)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("make_mask", [
    lambda x: x > 0,                     # full-shape mask
    lambda x: x[:, 0] > 0,               # mask over the leading axis: whole rows
    lambda x: np.zeros(x.shape, bool),   # selects nothing
    lambda x: np.ones(x.shape, bool),    # everything
])
@pytest.mark.parametrize("kind", ["mx", "numpy", "list"])
def test_scalar_assignment_matches_numpy(make_mask, kind):
    x = rand(4, 5)
    m = make_mask(x)
    key = {"mx": mx.array(m), "numpy": m, "list": m.tolist()}[kind]
    a = mx.array(x)
    a[key] = 3.5
    x[m] = 3.5
    np.testing.assert_array_equal(np.array(a), x)


def test_values_fill_selected_positions_in_order():
    x = rand(3, 4)
    m = x > 0
    vals = np.arange(m.sum(), dtype=np.float32) + 100
    a = mx.array(x)
    a[mx.array(m)] = mx.array(vals)
    x[m] = vals
    np.testing.assert_array_equal(np.array(a), x)
    # Extra values are unused (MLX takes them in order and ignores the rest).
    a = mx.array(x)
    a[mx.array(m)] = mx.arange(12).astype(mx.float32)
    want = x.copy()
    want[m] = np.arange(m.sum())
    np.testing.assert_array_equal(np.array(a), want)


def test_row_mask_takes_rows_or_broadcasts_one_row():
    x = rand(3, 4)
    rows = np.array([True, False, True])
    a = mx.array(x)
    a[mx.array(rows)] = mx.array([[1.0, 2, 3, 4], [5, 6, 7, 8]])
    x2 = x.copy()
    x2[rows] = [[1, 2, 3, 4], [5, 6, 7, 8]]
    np.testing.assert_array_equal(np.array(a), x2)
    a = mx.array(x)
    a[mx.array(rows)] = mx.array([9.0, 8, 7, 6])  # one row for every selected row
    x3 = x.copy()
    x3[rows] = [9, 8, 7, 6]
    np.testing.assert_array_equal(np.array(a), x3)
    a = mx.array(x)
    a[mx.array(rows)] = mx.array([[1.0], [2.0]])  # one value per row, broadcast along it
    x4 = x.copy()
    x4[rows] = [[1.0], [2.0]]
    np.testing.assert_array_equal(np.array(a), x4)


def test_python_bool_and_zero_d_masks():
    a = mx.zeros((2, 3))
    a[True] = 4.0
    assert np.array(a).tolist() == [[4.0] * 3] * 2
    a[False] = 7.0
    assert np.array(a).tolist() == [[4.0] * 3] * 2
    s = mx.array(3.0)
    s[mx.array(True)] = 5.0
    assert s.item() == 5.0


def test_values_are_cast_to_the_array_dtype():
    a = mx.arange(5)
    a[mx.array([True, False, True, False, True])] = mx.array([1.5, 2.5, 3.5])
    assert a.dtype == mx.int32 and a.tolist() == [1, 1, 2, 3, 3]  # as MLX: truncated


def test_integer_lists_stay_integer_indices():
    a = mx.zeros((3, 2))
    a[[1, 0, 1]] = 5.0  # ints: rows 1 and 0, not a mask
    assert np.array(a).tolist() == [[5, 5], [5, 5], [0, 0]]


def test_assignment_is_lazy_and_works_after_reshapes():
    x = rand(2, 3, 4)
    a = mx.array(x).reshape(6, 4)
    m = (a[:, 0] > 0)
    a[m] = 0.0
    want = x.reshape(6, 4).copy()
    want[want[:, 0] > 0] = 0.0
    np.testing.assert_array_equal(np.array(a), want)


def test_reading_with_a_mask_is_refused_like_mlx():
    a = mx.array(rand(3, 4))
    for key in (a > 0, mx.array([True, False, True]), np.array([True, False, True]),
                [True, False, True], True, mx.array(True)):
        with pytest.raises(ValueError, match="boolean"):
            a[key]
    # Inside a tuple: MLX refuses these too (reading with ValueError; assignment crashes MLX).
    with pytest.raises(ValueError, match="boolean"):
        a[:, mx.array([True, False, True, False])]
    with pytest.raises(ValueError, match="boolean"):
        a[(a > 0,)]
    b = mx.array(a)
    with pytest.raises(ValueError, match="whole key"):
        b[:, mx.array([True, False, True, False])] = 1.0


def test_mask_errors_are_mlxs():
    a = mx.zeros((3, 4))
    with pytest.raises(ValueError, match="beginning of the indexed array"):
        a[mx.array([True, False])] = 1.0
    with pytest.raises(ValueError, match="more dimensions"):
        a[mx.zeros((3, 4, 1), dtype=mx.bool)] = 1.0
    with pytest.raises(ValueError, match="broadcastable"):
        a[mx.array([True, False, True])] = mx.zeros((1, 2, 4))
    with pytest.raises(ValueError):
        a[mx.array([True, False, True])] = mx.zeros((2, 3))  # rows of the wrong length
    # Too few values: MLX raises RuntimeError when evaluating; here at the assignment.
    with pytest.raises(RuntimeError, match="selects 3"):
        a[mx.array([[True] * 3 + [False]] * 1 + [[False] * 4] * 2)] = mx.array([1.0, 2.0])
    with pytest.raises(RuntimeError, match="selects 2"):
        a[mx.array([True, False, True])] = mx.zeros((1, 4))
    # Nothing selected and nothing given: unchanged (MLX crashes on this one).
    b = mx.ones((3, 4))
    b[b < 0] = mx.zeros((0,))
    assert np.array(b).tolist() == [[1.0] * 4] * 3
