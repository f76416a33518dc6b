"""mlx.core's names in rmlx.core: every name MLX has is here or listed, with its reason, in
scripts/python_missing_names.py (checked against MLX's names recorded in
tests/fixtures/python/mlx_names.json); and the small helpers that come with the names
(dtype categories and limits, constants, compile, mx.metal / mx.cuda, devices)."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest

import rmlx.core as mx
from conftest import FIXTURES, ROOT


def _names_script():
    path = os.path.join(ROOT, "scripts", "python_missing_names.py")
    spec = importlib.util.spec_from_file_location("python_missing_names", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_mlx_name_is_present_or_explained():
    script = _names_script()
    with open(os.path.join(FIXTURES, "python", "mlx_names.json")) as f:
        mlx_names = json.load(f)["names"]
    problems = script.check(script._names("rmlx"), mlx_names)
    assert not problems, "\n".join(problems)
    # And most of mlx.core is there.
    missing = script.missing(script._names("rmlx"), mlx_names)
    assert len(missing["core"]) < 80, missing["core"]


def test_dtype_categories_and_limits():
    assert mx.issubdtype(mx.float16, mx.floating) and mx.issubdtype(mx.bfloat16, mx.inexact)
    assert mx.issubdtype(mx.int32, mx.signedinteger) and mx.issubdtype(mx.uint8, mx.integer)
    assert not mx.issubdtype(mx.uint8, mx.signedinteger) and not mx.issubdtype(mx.bool_, mx.number)
    assert mx.issubdtype(mx.bool_, mx.generic) and mx.issubdtype(mx.floating, mx.number)
    assert not mx.issubdtype(mx.number, mx.floating) and mx.issubdtype(mx.int64, mx.int64)
    assert mx.isdtype(mx.float32, "real floating") and mx.isdtype(mx.int32, ("bool", "integral"))
    assert not mx.isdtype(mx.bool_, "numeric") and mx.isdtype(mx.float16, mx.float16)
    f = mx.finfo(mx.float16)
    assert (f.min, f.max, f.eps, f.bits, f.dtype) == (-65504.0, 65504.0, 2**-10, 16, mx.float16)
    assert mx.finfo(mx.bfloat16).eps == 2**-7 and mx.finfo(mx.float32).max == np.finfo(np.float32).max
    assert mx.finfo(mx.float32).smallest_normal == np.finfo(np.float32).smallest_normal
    assert repr(f) == "finfo(min=-65504, max=65504, dtype=float16)"
    i = mx.iinfo(mx.int64)
    assert (i.min, i.max) == (-(2**63), 2**63 - 1) and mx.iinfo(mx.uint32).max == 2**32 - 1
    with pytest.raises(ValueError, match="finfo"):
        mx.finfo(mx.int32)
    with pytest.raises(ValueError, match="iinfo"):
        mx.iinfo(mx.float32)
    assert mx.result_type(mx.array([1]), mx.float16) == mx.float16
    assert mx.result_type(mx.int32, mx.uint32) == mx.int64
    assert mx.can_cast(mx.int32, mx.float32) and not mx.can_cast(mx.float32, mx.int32)
    assert mx.bool_ == mx.bool


def test_constants():
    assert mx.pi == math.pi and mx.e == math.e and mx.inf == math.inf and math.isnan(mx.nan)
    assert mx.euler_gamma == pytest.approx(0.5772156649015329, abs=0) and mx.newaxis is None
    assert mx.zeros((2, 3))[mx.newaxis].shape == (1, 2, 3)


def test_compile_returns_the_function():
    def f(x):
        return mx.exp(x) + 1

    g = mx.compile(f)
    assert g is f and mx.compile(f, shapeless=True) is f
    mx.disable_compile()
    mx.enable_compile()
    with pytest.raises(TypeError, match="callable"):
        mx.compile(3)


def test_accelerator_modules_and_devices():
    assert mx.metal.is_available() is False
    assert mx.cuda.is_available() == mx.is_available(mx.gpu)
    import rmlx.core.linalg  # noqa: F401  (importable as a module, as mlx.core.linalg)

    assert mx.device_count(mx.cpu) == 1
    assert (mx.device_count(mx.gpu) > 0) == mx.is_available(mx.gpu)
    info = mx.device_info(mx.cpu)
    assert set(info) >= {"device_name", "architecture"}
    old = mx.set_memory_limit(1 << 40)
    assert mx.get_memory_limit() == 1 << 40
    mx.set_memory_limit(old)


def test_default_device_is_the_gpu_where_present():
    """As in MLX: a fresh import runs ops on the GPU when there is one; RMLX_DEFAULT_DEVICE
    overrides, and a bad value fails the import with a message naming it."""
    import subprocess
    import sys

    def fresh(value):
        env = {k: v for k, v in os.environ.items() if k != "RMLX_DEFAULT_DEVICE"}
        if value is not None:
            env["RMLX_DEFAULT_DEVICE"] = value
        code = "import rmlx.core as mx; print(mx.default_device())"
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)

    gpu = mx.is_available(mx.gpu)
    r = fresh(None)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("Device(gpu, 0)" if gpu else "Device(cpu, 0)")
    r = fresh("cpu")
    assert r.stdout.strip() == "Device(cpu, 0)", r.stderr
    r = fresh("gpu")
    if gpu:
        assert r.stdout.strip() == "Device(gpu, 0)", r.stderr
    else:
        assert r.returncode != 0 and "not available" in r.stderr
    r = fresh("tpu")
    assert r.returncode != 0 and "RMLX_DEFAULT_DEVICE" in r.stderr and "cpu or gpu" in r.stderr


def test_aliases_are_the_same_functions():
    a = mx.array([0.25, -0.5])
    np.testing.assert_array_equal(np.array(mx.acos(a)), np.array(mx.arccos(a)))
    np.testing.assert_array_equal(np.array(mx.atan2(a, a)), np.array(mx.arctan2(a, a)))
    np.testing.assert_array_equal(np.array(mx.cumulative_sum(a)), np.array(mx.cumsum(a)))
    np.testing.assert_array_equal(np.array(mx.bitwise_left_shift(mx.array([1]), 3)), [8])


def test_new_ops_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    y = rng.standard_normal((4, 5)).astype(np.float32)
    a = mx.array(x)
    close = np.testing.assert_allclose
    close(np.array(mx.tensordot(a, mx.array(y), axes=1)), np.tensordot(x, y, 1), rtol=1e-5, atol=1e-6)
    close(np.array(mx.kron(a, mx.array(y))), np.kron(x, y), rtol=1e-6)
    close(np.array(mx.outer(a, a)), np.outer(x, x), rtol=1e-6)
    close(np.array(mx.trace(a, offset=1)), np.trace(x, offset=1), rtol=1e-5)
    close(np.array(mx.diagonal(a, -1)), np.diagonal(x, -1))
    close(np.array(mx.linalg.norm(a, ord=1, axis=0)), np.linalg.norm(x, 1, axis=0), rtol=1e-5)
    close(np.array(mx.linalg.norm(a, ord=-1)), np.linalg.norm(x, -1), rtol=1e-5)
    close(np.array(mx.median(a, axis=0)), np.median(x, axis=0), rtol=1e-6)
    close(np.array(mx.logaddexp(a, 2 * a)), np.logaddexp(x, 2 * x), rtol=1e-5)
    close(np.array(mx.arctanh(a / 4)), np.arctanh(x / 4), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.array(mx.roll(a, 3, 1)), np.roll(x, 3, 1))
    np.testing.assert_array_equal(np.array(mx.tile(a, (2, 3))), np.tile(x, (2, 3)))
    np.testing.assert_array_equal(np.array(mx.repeat(a, 2, 0)), np.repeat(x, 2, 0))
    np.testing.assert_array_equal(np.array(mx.flip(a, 0)), np.flip(x, 0))
    np.testing.assert_array_equal(np.array(mx.diff(a, 2)), np.diff(x, 2))
    np.testing.assert_array_equal(
        np.array(mx.searchsorted(mx.array([1, 2, 2, 4]), mx.array([0, 2, 3, 5]), side="right")),
        np.searchsorted([1, 2, 2, 4], [0, 2, 3, 5], side="right"))
    for got, want in zip(mx.meshgrid(mx.arange(3), mx.arange(2)), np.meshgrid(np.arange(3), np.arange(2))):
        np.testing.assert_array_equal(np.array(got), want)
    for sub, shapes in [("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk", [(2, 3, 4), (2, 4, 2)]),
                        ("ii->i", [(3, 3)]), ("...i,i->...", [(2, 3, 4), (4,)]), ("ijk,kl,lm->im",
                        [(2, 3, 4), (4, 5), (5, 2)])]:
        xs = [rng.standard_normal(sh).astype(np.float32) for sh in shapes]
        close(np.array(mx.einsum(sub, *[mx.array(x_) for x_ in xs])), np.einsum(sub, *xs), rtol=1e-4, atol=1e-5)
    # Integers contract too (MLX refuses: its matmul takes floats only).
    ia, ib = rng.integers(-5, 5, (3, 4)), rng.integers(-5, 5, (4, 2))
    got = mx.einsum("ij,jk->ik", mx.array(ia.astype(np.int32)), mx.array(ib.astype(np.int32)))
    assert got.dtype == mx.int32
    np.testing.assert_array_equal(np.array(got), ia @ ib)
    x1 = rng.standard_normal((1, 9, 4)).astype(np.float32)
    w1 = rng.standard_normal((2, 3, 4)).astype(np.float32)
    # conv1d is cross-correlation: out[t, o] = sum_k,c x[t + k, c] w[o, k, c]
    want = np.stack([np.einsum("kc,okc->o", x1[0, t:t + 3], w1) for t in range(7)])[None]
    close(np.array(mx.conv1d(mx.array(x1), mx.array(w1))), want, rtol=1e-4, atol=1e-5)
    close(np.array(mx.convolve(mx.array(x[0]), mx.array(y[0, :3]))), np.convolve(x[0], y[0, :3]), rtol=1e-5,
          atol=1e-6)
    for w in ("bartlett", "blackman", "hamming", "hanning"):
        close(np.array(getattr(mx, w)(7)), getattr(np, w)(7), atol=1e-6)


def test_gather_mm_and_gather_qmm():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((3, 2, 8)).astype(np.float32)
    b = rng.standard_normal((4, 8, 5)).astype(np.float32)
    li, ri = np.array([0, 2, 1, 0]), np.array([3, 0, 1, 3])
    got = mx.gather_mm(mx.array(a), mx.array(b), mx.array(li), mx.array(ri))
    np.testing.assert_allclose(np.array(got), a[li] @ b[ri], rtol=1e-5, atol=1e-5)
    w = rng.standard_normal((4, 16, 64)).astype(np.float32)
    wq, s, bi = mx.quantize(mx.array(w), group_size=32, bits=8)
    x = mx.array(rng.standard_normal((2, 1, 64)).astype(np.float32))
    out = mx.gather_qmm(x, wq, s, bi, rhs_indices=mx.array([1, 3]), group_size=32, bits=8)
    deq = np.array(mx.dequantize(wq, s, bi, group_size=32, bits=8))
    want = np.array(x) @ deq[[1, 3]].transpose(0, 2, 1)
    # The decode kernel quantizes activations to int8 per 32 values (RMLX_QMV_EXACT=1 turns
    # that off): about 1% of the output's scale, as quantized_matmul in test_mlx_parity.
    np.testing.assert_allclose(np.array(out), want, rtol=0, atol=3e-2 * np.abs(want).max())
    with pytest.raises(ValueError, match="affine"):
        mx.gather_qmm(x, wq, s, bi, mode="mxfp4")


def test_new_op_errors():
    a = mx.zeros((2, 3))
    with pytest.raises(ValueError, match="diagonal"):
        mx.diagonal(a, 0, 1, 1)
    with pytest.raises(ValueError, match="svd"):
        mx.linalg.norm(a, ord=2)
    with pytest.raises(ValueError, match="negative"):
        mx.repeat(a, -1)
    with pytest.raises(ValueError, match="non-negative"):
        mx.diff(a, n=-1)
    with pytest.raises(ValueError, match="'xy'"):
        mx.meshgrid(a, indexing="zz")
    with pytest.raises(ValueError, match="side"):
        mx.searchsorted(mx.arange(3), mx.arange(2), side="middle")
    with pytest.raises(TypeError, match="tensordot"):
        mx.tensordot(a, a, axes="x")
    with pytest.raises(ValueError):
        mx.tensordot(a, a, axes=[[0], [1]])
    with pytest.raises(TypeError):
        mx.random.gumbel((2,), dtype=mx.int32)
    with pytest.raises(ValueError, match="broadcast"):
        mx.random.bernoulli(mx.array([0.5, 0.5]), (3,))
