"""rmlx.core against NumPy, and the behaviour of the binding itself: conversion, dtypes,
indexing, operators, errors, devices and streams, eval, file I/O, memory."""

import os
import threading

import numpy as np
import pytest

import rmlx.core as mx

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# ---- construction and conversion -------------------------------------------------------

def test_from_python_scalars_and_lists():
    assert mx.array(3).dtype == mx.int32
    assert mx.array(3.5).dtype == mx.float32
    assert mx.array(True).dtype == mx.bool
    assert mx.array(2**40).dtype == mx.int64
    a = mx.array([[1, 2], [3, 4]])
    assert a.dtype == mx.int32 and a.shape == (2, 2) and a.ndim == 2 and a.size == 4
    assert mx.array([1, 2.5]).dtype == mx.float32
    assert mx.array([True, False]).tolist() == [True, False]
    assert mx.array([[1.5], [2.0]]).tolist() == [[1.5], [2.0]]
    assert mx.array([1, 2], dtype=mx.float16).dtype == mx.float16
    assert mx.array([mx.array([1, 2]), mx.array([3, 4])]).tolist() == [[1, 2], [3, 4]]
    assert mx.array(7).item() == 7 and isinstance(mx.array(7).item(), int)
    assert isinstance(mx.array(1.5).item(), float)


def test_ragged_list_is_value_error():
    with pytest.raises(ValueError, match="ragged"):
        mx.array([[1, 2], [3]])
    with pytest.raises(ValueError, match="ragged"):
        mx.array([1, [2, 3]])


@pytest.mark.parametrize("dt,want", [
    (np.float32, mx.float32), (np.float16, mx.float16), (np.int32, mx.int32),
    (np.int64, mx.int64), (np.uint8, mx.uint8), (np.uint32, mx.uint32), (np.bool_, mx.bool),
    (np.float64, mx.float32), (np.int8, mx.int32), (np.int16, mx.int32), (np.uint16, mx.uint32),
])
def test_numpy_round_trip(dt, want):
    src = (RNG.standard_normal((3, 5)) * 10).astype(dt)
    a = mx.array(src)
    assert a.dtype == want and a.shape == (3, 5)
    back = np.array(a)
    np.testing.assert_array_equal(back, src.astype(back.dtype))


def test_numpy_non_contiguous_and_scalars():
    src = rand(4, 6)
    np.testing.assert_array_equal(np.array(mx.array(src[:, ::2])), src[:, ::2])
    np.testing.assert_array_equal(np.array(mx.array(src.T)), src.T)
    assert mx.array(np.float32(2.5)).item() == 2.5
    assert mx.array(np.array(3, dtype=np.int64)).shape == ()


def test_writable_numpy_input_is_copied():
    src = np.arange(6, dtype=np.float32)
    a = mx.array(src)
    src[:] = -1
    assert a.tolist() == [0, 1, 2, 3, 4, 5]


def test_readonly_numpy_input_is_zero_copy():
    src = np.arange(1 << 16, dtype=np.float32)
    src.flags.writeable = False
    before = mx.get_active_memory()
    a = mx.array(src)
    assert mx.get_active_memory() - before < src.nbytes // 2
    assert a.sum().item() == float(src.sum())


def test_buffer_protocol_is_zero_copy_and_read_only():
    a = mx.arange(12, dtype=mx.float32).reshape(3, 4)
    v = np.asarray(a)
    w = np.asarray(a)
    assert v.ctypes.data == w.ctypes.data  # both views of the array's own buffer
    assert not v.flags.writeable
    m = memoryview(a)
    assert m.format == "f" and m.shape == (3, 4) and m.readonly
    np.testing.assert_array_equal(np.array(a.T), np.arange(12, dtype=np.float32).reshape(3, 4).T)
    # A writable copy is there for the asking.
    c = np.array(a)
    c[0, 0] = 5
    assert a[0, 0].item() == 0


def test_bfloat16_to_numpy_needs_a_cast():
    a = mx.array([1.0, 2.0], dtype=mx.bfloat16)
    with pytest.raises((ValueError, BufferError), match="bfloat16"):
        np.array(a)
    assert np.array(a.astype(mx.float32)).tolist() == [1.0, 2.0]


def test_dtype_objects():
    assert mx.float32.size == 4 and mx.bfloat16.size == 2 and mx.int64.size == 8
    assert mx.float32 == mx.float32 and mx.float32 != mx.float16
    assert {mx.float32: 1}[mx.float32] == 1
    assert "float32" in repr(mx.float32)
    assert mx.array([1, 2]).astype("float16").dtype == mx.float16
    assert mx.array([1, 2]).astype(np.float32).dtype == mx.float32


def test_view_reinterprets_bytes():
    x = np.array([1.5, -2.0, 0.0], dtype=np.float32)
    u = mx.view(mx.array(x), mx.uint32)
    assert u.dtype == mx.uint32
    np.testing.assert_array_equal(np.array(u), x.view(np.uint32))
    np.testing.assert_array_equal(np.array(mx.view(u, mx.float32)), x)
    with pytest.raises(Exception, match="element size"):
        mx.view(mx.array(x), mx.float16)


# ---- operators and ops against NumPy -------------------------------------------------

def test_operators_broadcast_like_numpy():
    x, y = rand(3, 1, 4), rand(5, 1)
    a, b = mx.array(x), mx.array(y)
    for got, want in [(a + b, x + y), (a - b, x - y), (a * b, x * y), (a / b, x / y),
                      (a % 0.7, np.mod(x, np.float32(0.7))), (a // b, x // y)]:
        np.testing.assert_allclose(np.array(got), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.array(a > b), x > y)
    np.testing.assert_array_equal(np.array(a == a), np.ones_like(x, dtype=bool))


def test_weak_scalars_keep_the_array_dtype():
    h = mx.array([1.0, 2.0], dtype=mx.float16)
    assert (h + 1.5).dtype == mx.float16
    assert (2 * h).dtype == mx.float16
    i = mx.array([1, 2], dtype=mx.uint8)
    assert (i + 3).dtype == mx.uint8
    assert (mx.array([1, 2]) + 1.5).dtype == mx.float32
    assert (mx.array([True]) + 1).dtype == mx.int32
    assert (1 - mx.array([3])).tolist() == [-2]
    assert (2 ** mx.array([3.0])).tolist() == [8.0]


def test_logical_and_bitwise_operators():
    a, b = mx.array([True, False, True]), mx.array([True, True, False])
    assert (a & b).tolist() == [True, False, False]
    assert (a | b).tolist() == [True, True, True]
    assert (~a).tolist() == [False, True, False]
    assert (mx.array([6]) & 3).tolist() == [2]
    assert (mx.array([1]) << 4).tolist() == [16]


def test_unknown_operand_is_type_error():
    with pytest.raises(TypeError):
        mx.array([1]) + "x"
    assert (mx.array([1]) == None) is False  # noqa: E711 (falls back to identity)


def test_reductions_match_numpy():
    x = rand(3, 4, 5)
    a = mx.array(x)
    np.testing.assert_allclose(np.array(mx.sum(a, axis=(0, 2))), x.sum(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(np.array(a.mean(axis=1, keepdims=True)), x.mean(axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(np.array(mx.var(a, axis=-1, ddof=1)), x.var(axis=-1, ddof=1), rtol=1e-4)
    np.testing.assert_array_equal(np.array(mx.argmax(a, axis=2)), x.argmax(axis=2))
    np.testing.assert_allclose(np.array(mx.cumsum(a, axis=1)), np.cumsum(x, axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.array(mx.sort(a, axis=0)), np.sort(x, axis=0))
    assert mx.sum(a).item() == pytest.approx(float(x.sum()), rel=1e-5)


def test_shape_ops_match_numpy():
    x = rand(2, 3, 4)
    a = mx.array(x)
    np.testing.assert_array_equal(np.array(a.transpose(2, 0, 1)), x.transpose(2, 0, 1))
    np.testing.assert_array_equal(np.array(mx.reshape(a, (6, -1))), x.reshape(6, -1))
    np.testing.assert_array_equal(np.array(a.flatten()), x.flatten())
    np.testing.assert_array_equal(np.array(mx.concatenate([a, a], axis=2)), np.concatenate([x, x], 2))
    np.testing.assert_array_equal(np.array(mx.concatenate([a, a], axis=None)), np.concatenate([x, x], None))
    np.testing.assert_array_equal(np.array(mx.stack([a, a], axis=1)), np.stack([x, x], 1))
    parts = mx.split(a, [1, 3], axis=2)
    for p, q in zip(parts, np.split(x, [1, 3], axis=2)):
        np.testing.assert_array_equal(np.array(p), q)
    np.testing.assert_array_equal(np.array(mx.pad(a, [(0, 1), (1, 0), (0, 0)])), np.pad(x, [(0, 1), (1, 0), (0, 0)]))
    assert mx.squeeze(mx.zeros((1, 3, 1))).shape == (3,)
    assert mx.expand_dims(a, (0, -1)).shape == (1, 2, 3, 4, 1)
    assert len(a) == 2 and [r.shape for r in a] == [(3, 4), (3, 4)]


@pytest.mark.parametrize("key", [
    0, -1, (1, 2), (slice(None), 1), (slice(1, None), slice(None, None, -1)),
    (Ellipsis, 0), (None, 1), (0, None, slice(None, 2)), (slice(None, None, 2), Ellipsis, -1),
    (slice(-2, None), slice(3, 0, -2)),
])
def test_basic_indexing_matches_numpy(key):
    x = rand(3, 4, 5)
    np.testing.assert_array_equal(np.array(mx.array(x)[key]), x[key])


@pytest.mark.parametrize("key", [
    [2, 0, -1],
    (slice(None), [1, 1, 3]),
    ([0, 2], [1, 3]),
    ([[0], [2]], [1, 3]),
    (0, slice(None), [4, 0]),
    (slice(None), [0, 2], [1, 4]),
    ([1, 0], slice(None), [4, 0]),
    (Ellipsis, [3, -1]),
])
def test_advanced_indexing_matches_numpy(key):
    x = rand(3, 4, 5)
    k = tuple(mx.array(np.array(i)) if isinstance(i, list) else i for i in key) if isinstance(key, tuple) else mx.array(key)
    np.testing.assert_array_equal(np.array(mx.array(x)[k]), x[key])


def test_index_errors():
    a = mx.zeros((2, 3))
    with pytest.raises(IndexError, match="out of bounds"):
        a[2]
    with pytest.raises(IndexError, match="too many"):
        a[0, 0, 0]
    # Reading with a boolean mask is refused as MLX refuses it (ValueError).
    with pytest.raises(ValueError, match="boolean"):
        a[mx.array([True, False])]


@pytest.mark.parametrize("key,val", [
    (0, 9.0), ((slice(None), 1), 7.0), ((slice(1, None), slice(None, None, 2)), [[1.0, 2.0]]),
    ((Ellipsis, -1), 3.0), (mx.array([2, 0]), 5.0),
    ((slice(None), mx.array([3, 1])), [[1.0, 2.0]] * 3),
])
def test_setitem_matches_numpy(key, val):
    x = rand(3, 4)
    a = mx.array(x)
    a[key] = mx.array(val) if isinstance(val, list) else val
    nkey = tuple(np.array(k) if isinstance(k, mx.array) else k for k in key) if isinstance(key, tuple) else (np.array(key) if isinstance(key, mx.array) else key)
    x[nkey] = val
    np.testing.assert_array_equal(np.array(a), x)


def test_creation_ops():
    assert mx.arange(5).tolist() == [0, 1, 2, 3, 4]
    assert mx.arange(5).dtype == mx.int32 and mx.arange(0.0, 1.0, 0.5).dtype == mx.float32
    np.testing.assert_allclose(np.array(mx.linspace(0, 1, 11)), np.linspace(0, 1, 11), atol=1e-7)
    np.testing.assert_array_equal(np.array(mx.eye(3, 4, k=-1)), np.eye(3, 4, k=-1))
    assert mx.full((2, 2), 3.0).tolist() == [[3.0, 3.0], [3.0, 3.0]]
    assert mx.zeros((2,), dtype=mx.int32).dtype == mx.int32


def test_matmul_and_quantized_matmul_shapes():
    x, w = rand(2, 64), rand(16, 64)
    np.testing.assert_allclose(np.array(mx.matmul(mx.array(x), mx.array(w.T))), x @ w.T, rtol=1e-4, atol=1e-4)
    wq, s, b = mx.quantize(mx.array(w), group_size=64, bits=4)
    assert wq.dtype == mx.uint32 and wq.shape == (16, 8) and s.shape == (16, 1)
    deq = np.array(mx.dequantize(wq, s, b, group_size=64, bits=4))
    y = np.array(mx.quantized_matmul(mx.array(x), wq, s, b, group_size=64, bits=4))
    # int8 activations by default (RMLX_QMV_EXACT=1 for the exact product): ~1% of the range.
    np.testing.assert_allclose(y, x @ deq.T, rtol=0, atol=2e-2 * np.abs(x @ deq.T).max())


# ---- errors ---------------------------------------------------------------------------

def test_errors_map_to_python_exceptions_with_core_messages():
    with pytest.raises(ValueError, match=r"\[reshape\]"):
        mx.reshape(mx.zeros((3,)), (2, 2))
    with pytest.raises(ValueError, match=r"broadcast"):
        mx.array([1, 2]) + mx.array([1, 2, 3])
    with pytest.raises(TypeError, match=r"\[bitwise_and\]"):
        mx.bitwise_and(mx.array([1.0]), mx.array([2.0]))
    with pytest.raises(ValueError, match=r"\[quantize\].*bits"):
        mx.quantize(mx.zeros((4, 64)), bits=7)
    with pytest.raises(ValueError, match="one element"):
        mx.zeros((2,)).item()
    with pytest.raises(TypeError):
        mx.array(object())
    with pytest.raises(ValueError, match="mode"):
        mx.quantize(mx.zeros((4, 64)), mode="mxfp4")


def test_memory_limit_raises_memory_error():
    old = mx.set_memory_limit(1 << 20)
    try:
        with pytest.raises(MemoryError, match="memory limit"):
            mx.eval(mx.zeros((1 << 20,)) + 1)
    finally:
        mx.set_memory_limit(old)


def test_evaluation_error_is_runtime_or_value_error_not_a_crash():
    # On the CPU: a GPU clamps indices it computed itself instead of reading them back.
    a = mx.take(mx.arange(3), mx.array([7]), stream=mx.cpu)
    with pytest.raises((ValueError, RuntimeError, IndexError)):
        mx.eval(a)


# ---- eval, devices, streams -----------------------------------------------------------

def test_eval_accepts_nested_containers_and_async_eval():
    a, b = mx.ones((3,)) * 2, mx.ones((2,)) + 1
    mx.eval([a, {"b": b}], None)
    c = mx.exp(mx.zeros((4,)))
    mx.async_eval(c)
    assert c.tolist() == [1.0] * 4


def test_eval_releases_the_gil():
    # A Python thread keeps running while a large evaluation is in flight.
    x = mx.random.normal((512, 512), key=mx.random.key(0))
    y = x
    for _ in range(30):
        y = y @ x * 1e-3
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)

    t = threading.Thread(target=ticker)
    t.start()
    mx.eval(y)
    stop.set()
    t.join()
    assert len(ticks) > 10


def test_devices_and_streams():
    start = mx.default_device()
    assert mx.Device(mx.cpu).type == mx.cpu
    s = mx.default_stream(mx.cpu)
    assert s.device == mx.Device(mx.cpu)
    with mx.stream(mx.cpu) as st:
        assert st == mx.default_stream()
        a = mx.ones((2,)) + 1
    assert a.tolist() == [2.0, 2.0]
    assert (mx.add(mx.ones((2,)), 1, stream=mx.cpu)).tolist() == [2.0, 2.0]
    mx.set_default_device(mx.cpu)
    assert mx.default_device() == mx.Device(mx.cpu)
    mx.synchronize()
    if not mx.is_available(mx.gpu):
        with pytest.raises(ValueError, match="not available"):
            mx.set_default_device(mx.gpu)
    mx.set_default_device(start)


@pytest.mark.skipif(not mx.is_available(mx.gpu), reason="no GPU on this machine")
def test_gpu_stream_matches_cpu():
    x = rand(64, 64)
    with mx.stream(mx.gpu):
        g = mx.softmax(mx.array(x) @ mx.array(x), axis=-1)
    c = mx.softmax(mx.array(x) @ mx.array(x), axis=-1, stream=mx.cpu)
    np.testing.assert_allclose(np.array(g), np.array(c), rtol=1e-4, atol=1e-5)


# ---- files and memory ------------------------------------------------------------------

def test_safetensors_and_npy_round_trip(tmp_path):
    arrays = {"w": mx.array(rand(3, 4)), "i": mx.arange(5), "h": mx.ones((2,), dtype=mx.bfloat16)}
    f = str(tmp_path / "x.safetensors")
    mx.save_safetensors(f, arrays, metadata={"format": "mlx"})
    back, meta = mx.load(f, return_metadata=True)
    assert meta == {"format": "mlx"}
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype
        assert mx.array_equal(back[k], v).item()
    mx.save(str(tmp_path / "y"), arrays["w"])
    assert mx.array_equal(mx.load(str(tmp_path / "y.npy")), arrays["w"]).item()
    with pytest.raises(ValueError, match="format"):
        mx.load(str(tmp_path / "x.bin"))
    with pytest.raises(RuntimeError):
        mx.load(str(tmp_path / "missing.safetensors"))


def test_memory_functions():
    mx.reset_peak_memory()
    a = mx.arange(1 << 18).astype(mx.float32)
    mx.eval(a)
    assert mx.get_active_memory() >= a.nbytes
    assert mx.get_peak_memory() >= a.nbytes
    del a
    assert mx.get_cache_memory() >= 0
    mx.clear_cache()
    assert mx.get_cache_memory() == 0
    old = mx.set_cache_limit(0)
    mx.set_cache_limit(old)


def test_random_module():
    mx.random.seed(3)
    a = mx.random.uniform(shape=(4,))
    mx.random.seed(3)
    assert mx.array_equal(a, mx.random.uniform(shape=(4,))).item()
    n = np.array(mx.random.normal((20000,), key=mx.random.key(1)))
    assert abs(n.mean()) < 0.05 and abs(n.std() - 1) < 0.05
    r = mx.random.randint(3, 7, (100,), key=mx.random.key(2))
    assert r.dtype == mx.int32 and 3 <= r.min().item() and r.max().item() < 7
    c = mx.random.categorical(mx.array([[-1e9, 0.0, -1e9]]), key=mx.random.key(0))
    assert c.tolist() == [1]
    import rmlx.core.random  # noqa: F401  (importable as a module too)
