"""The same script (parity_cases.py) run with rmlx.core gives MLX's numbers.

The reference is tests/fixtures/python/mlx_parity.npz, written by MLX itself
(scripts/fixtures/python_mlx_parity.py). When mlx is importable too, the script is also run
live against it.
"""

import os

import numpy as np
import pytest

import rmlx.core as mx
from conftest import FIXTURES
from parity_cases import cases

REF = os.path.join(FIXTURES, "python", "mlx_parity.npz")

# Integer, boolean, quantized and random-bit results must match exactly; float results
# within float32 rounding of a different summation order.
EXACT_KINDS = "biu?"


def _flatten(results):
    flat = {}
    for name, val in results.items():
        if isinstance(val, tuple):
            for j, v in enumerate(val):
                flat[f"{name}/{j}"] = v
        else:
            flat[name] = val
    return flat


@pytest.fixture(scope="module")
def ours():
    return _flatten(cases(mx))


@pytest.fixture(scope="module")
def ref():
    with np.load(REF) as f:
        return {k: f[k] for k in f.files if not k.startswith("__")}


# Known, documented differences of the core (not of the binding):
# - quantized_matmul quantizes activations to int8 per 32 values by default (llama.cpp's trick,
#   RMLX_QMV_EXACT=1 turns it off): about 1% from MLX's exact float product.
# - randint maps random bits to integers differently from MLX: same range and dtype, other values.
LOOSE = {"qmm4": 3e-2, "qmm8": 3e-2}


def _check(name, got, want):
    assert got.shape == want.shape, f"{name}: shape {got.shape} != MLX's {want.shape}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != MLX's {want.dtype}"
    if name in LOOSE:
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=0, atol=LOOSE[name] * scale, err_msg=name)
    elif name == "random/2":
        assert got.min() >= 0 and got.max() < 10, name
    elif want.dtype.kind in EXACT_KINDS or name.startswith(("quant", "random/2", "random/3")):
        np.testing.assert_array_equal(got, want, err_msg=name)
    else:
        tol = 2e-3 if want.dtype == np.float16 else 1e-5
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)


def test_every_case_is_compared(ours, ref):
    assert sorted(ours) == sorted(ref)


def test_matches_mlx_fixture(ours, ref):
    failures = []
    for name in sorted(ref):
        try:
            _check(name, ours[name], ref[name])
        except AssertionError as e:
            failures.append(str(e).splitlines()[0] + " " + " ".join(str(e).split()[:40]))
    assert not failures, "\n".join(failures)


def test_matches_live_mlx(ours):
    mlx = pytest.importorskip("mlx.core")
    live = _flatten(cases(mlx))
    for name in sorted(live):
        _check(name, ours[name], live[name])
