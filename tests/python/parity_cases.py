"""One script, two frameworks: ``cases(mx)`` runs the same MLX-style code with
``mx = mlx.core`` or ``mx = rmlx.core`` and returns name -> NumPy result.

``scripts/fixtures/python_mlx_parity.py`` runs it with MLX and commits the results
(tests/fixtures/python/mlx_parity.npz); ``test_mlx_parity.py`` runs it with rmlx and
compares. Inputs come from a seeded NumPy generator, so both sides see the same numbers.
Keep every array small: the fixture file stays a few KB.
"""

import numpy as np


def _inputs():
    rng = np.random.default_rng(1234)
    return {
        "a": rng.standard_normal((3, 4)).astype(np.float32),
        "b": rng.standard_normal((4,)).astype(np.float32),
        "m": rng.standard_normal((4, 5)).astype(np.float32),
        "p": (rng.random((2, 3)).astype(np.float32) + 0.5),
        "i": rng.integers(-5, 5, (3, 4)).astype(np.int32),
        "w": rng.standard_normal((8, 64)).astype(np.float32),
        "x": rng.standard_normal((2, 64)).astype(np.float32),
        "q": rng.standard_normal((1, 4, 3, 8)).astype(np.float32),
        "k": rng.standard_normal((1, 2, 5, 8)).astype(np.float32),
        "v": rng.standard_normal((1, 2, 5, 8)).astype(np.float32),
        "r": rng.standard_normal((1, 2, 3, 8)).astype(np.float32),
    }


def cases(mx):
    n = _inputs()
    a, b, m, p = mx.array(n["a"]), mx.array(n["b"]), mx.array(n["m"]), mx.array(n["p"])
    i = mx.array(n["i"])
    out = {}

    # Arithmetic with broadcasting and Python scalars (weak types).
    out["add_bcast"] = a + b
    out["scalar_ops"] = (a * 2 - 1) / 3 + 0.5
    out["rsub_rdiv"] = 1 - a, 2 / p
    out["int_scalar"] = i * 3 + 1
    out["int_div"] = i / 2
    out["floordiv_mod"] = i // 3, i % 3
    out["pow"] = p ** 2.5
    out["cmp"] = a > 0, a <= b, i == 2
    out["neg_abs"] = -a, abs(a)
    out["matmul"] = a @ m
    out["maximum"] = mx.maximum(a, 0.0), mx.minimum(a, b)
    out["where"] = mx.where(a > 0, a, 0.0)
    out["clip"] = mx.clip(a, -0.5, 0.5)

    # Unary.
    for name in ["exp", "sin", "cos", "tanh", "sigmoid", "erf", "square", "abs", "sign",
                 "floor", "ceil"]:
        out["u_" + name] = getattr(mx, name)(a)
    out["u_log_sqrt"] = mx.log(p), mx.sqrt(p), mx.rsqrt(p), mx.log1p(p), mx.reciprocal(p)
    out["u_erfinv"] = mx.erfinv(mx.array(n["p"] - 1.0))
    out["round"] = mx.round(a * 10), mx.round(a, 2)

    # Reductions.
    out["sum"] = mx.sum(a), mx.sum(a, axis=0), mx.sum(a, axis=1, keepdims=True)
    out["mean_var"] = mx.mean(a, axis=-1), mx.var(a, axis=0), mx.var(a, ddof=1), mx.std(a)
    out["max_min"] = mx.max(a, axis=1), mx.min(a, axis=(0, 1)), a.max(), a.min(0)
    out["prod"] = mx.prod(p, axis=1)
    out["logsumexp"] = mx.logsumexp(a, axis=1), mx.logsumexp(a)
    out["softmax"] = mx.softmax(a, axis=-1), mx.softmax(a, axis=0)
    out["argmax"] = mx.argmax(a, axis=1), mx.argmin(a, axis=0), mx.argmax(a)
    out["any_all"] = mx.any(a > 1, axis=0), mx.all(a > -3)
    out["cumsum"] = mx.cumsum(a, axis=1), mx.cumprod(p, axis=0), mx.cummax(a, axis=1)
    out["cumsum_rev"] = mx.cumsum(a, axis=1, reverse=True), mx.cumsum(a, axis=1, inclusive=False)

    # Shapes and indexing.
    out["reshape"] = mx.reshape(a, (2, 6)), a.reshape(4, 3), a.reshape(-1)
    out["transpose"] = mx.transpose(a), a.T, mx.swapaxes(a, 0, 1), mx.moveaxis(mx.array(n["q"]), 1, 3)
    out["expand_squeeze"] = mx.expand_dims(a, 0), mx.squeeze(mx.expand_dims(a, (0, 2)))
    out["concat_stack"] = mx.concatenate([a, a], axis=1), mx.stack([a, a], axis=0)
    out["split"] = tuple(mx.split(a, 2, axis=1)) + tuple(mx.split(a, [1, 2], axis=0))
    out["pad"] = mx.pad(a, ((1, 0), (0, 2))), mx.pad(a, 1, constant_values=3.0)
    out["tril_triu"] = mx.tril(mx.ones((4, 4))), mx.triu(a, k=1)
    out["broadcast_to"] = mx.broadcast_to(b, (3, 4))
    out["index_basic"] = a[1], a[:, 2], a[1:3, ::2], a[::-1], a[..., -1], a[None, 0, 1:]
    out["index_array"] = a[mx.array([2, 0])], a[:, mx.array([3, 1, 1])], a[mx.array([0, 2]), mx.array([1, 3])]
    out["take"] = mx.take(a, mx.array([0, 5, 11])), mx.take(a, mx.array([1, 0]), axis=1)
    out["take_along"] = mx.take_along_axis(a, mx.argsort(a, axis=1), axis=1)
    out["sort"] = mx.sort(a, axis=1), mx.sort(a, axis=0), mx.argsort(b)
    out["topk"] = mx.sort(mx.topk(a, 2, axis=1), axis=1)
    out["partition"] = mx.partition(b, 1)[1:2]

    # Creation.
    out["creation"] = (mx.arange(5), mx.arange(1, 2, 0.25), mx.linspace(0, 1, 5), mx.eye(3, 4, k=1),
                       mx.zeros((2, 2)), mx.full((2, 3), 7), mx.ones_like(a), mx.identity(2))
    out["astype"] = a.astype(mx.float16), a.astype(mx.int32), (a > 0).astype(mx.float32), a.astype(mx.bfloat16).astype(mx.float32)

    # Quantization (bit-exact with MLX).
    w, x = mx.array(n["w"]), mx.array(n["x"])
    for bits in (4, 8):
        wq, s, bi = mx.quantize(w, group_size=32, bits=bits)
        out[f"quant{bits}"] = wq, s, bi, mx.dequantize(wq, s, bi, group_size=32, bits=bits)
        out[f"qmm{bits}"] = mx.quantized_matmul(x, wq, s, bi, transpose=True, group_size=32, bits=bits)

    # Random with explicit keys (threefry, as MLX).
    key = mx.random.key(42)
    out["random"] = (mx.random.uniform(shape=(5,), key=key), mx.random.normal((5,), key=key),
                     mx.random.randint(0, 10, (5,), key=key), mx.random.split(key))

    # Fused ops.
    q, k, v = mx.array(n["q"]), mx.array(n["k"]), mx.array(n["v"])
    out["rms_norm"] = mx.fast.rms_norm(a, mx.ones((4,)) * 2, 1e-5)
    out["layer_norm"] = mx.fast.layer_norm(a, b, b, 1e-5)
    r = mx.array(n["r"])
    out["rope"] = (mx.fast.rope(r, 8, traditional=False, base=10000.0, scale=1.0, offset=3),
                   mx.fast.rope(r, 4, traditional=True, base=10000.0, scale=0.5, offset=0))
    out["sdpa"] = (mx.fast.scaled_dot_product_attention(q, k, v, scale=0.35),
                   mx.fast.scaled_dot_product_attention(q, k, v, scale=0.35, mask="causal"))

    # Functions added for mlx.core's names (issue 9).
    u = mx.array(n["p"] - 1.0)  # in (-0.5, 0.5)
    out["u_inverse"] = (mx.arcsin(u), mx.arccos(u), mx.arctan(a), mx.arcsinh(a), mx.arccosh(p + 1),
                        mx.arctanh(u), mx.asin(u), mx.atan2(a, b))
    out["u_hyper"] = mx.sinh(a), mx.cosh(a), mx.tan(u), mx.expm1(a), mx.log2(p), mx.log10(p)
    out["u_misc"] = (mx.trunc(a * 3), mx.degrees(a), mx.radians(a), mx.logaddexp(a, b),
                     mx.logical_xor(a > 0, b > 0), mx.positive(a), mx.stop_gradient(a))
    special = mx.array([float("nan"), float("inf"), -float("inf"), 1.0])
    out["predicates"] = (mx.isnan(special), mx.isinf(special), mx.isposinf(special),
                         mx.isneginf(special), mx.isfinite(special), mx.nan_to_num(special),
                         mx.nan_to_num(special, nan=1.0, posinf=2.0, neginf=-2.0), mx.isnan(i))
    out["divmod"] = tuple(mx.divmod(i, 3))
    out["shape_new"] = (mx.flip(a), mx.flip(a, 1), mx.roll(a, 2), mx.roll(a, -1, 1), mx.roll(a, (1, 2), (0, 1)),
                        mx.repeat(a, 2, axis=1), mx.repeat(i, 3), mx.tile(a, (2, 1)), mx.tile(b, 2),
                        mx.unflatten(a, 1, (2, 2)), mx.diff(a), mx.diff(i, n=2, axis=0),
                        mx.permute_dims(a), mx.matrix_transpose(mx.array(n["q"])))
    out["meshgrid"] = mx.meshgrid(b, mx.arange(3)) + mx.meshgrid(b, mx.arange(3), indexing="ij", sparse=True)
    out["unstack"] = mx.unstack(a, axis=1)
    out["atleast"] = mx.atleast_1d(mx.array(2.0)), mx.atleast_2d(b), mx.atleast_3d(a)
    out["median_count"] = (mx.median(a), mx.median(a, axis=1), mx.median(i, axis=0, keepdims=True),
                           mx.count_nonzero(i), mx.count_nonzero(i, axis=1)) + mx.minmax(a, axis=0)
    out["scan_dtype"] = mx.cumsum(i, axis=1, dtype=mx.float32), mx.cumulative_prod(p, axis=1)
    out["products"] = (mx.outer(a, b), mx.inner(a, a), mx.tensordot(a, m, axes=1),
                       mx.tensordot(a, a, axes=[[0, 1], [0, 1]]), mx.kron(a, mx.ones((2, 1))),
                       mx.addmm(b, a, m[:, :4], alpha=0.5, beta=2.0), mx.vecdot(a, a, axis=0))
    out["diagonals"] = (mx.diagonal(m), mx.diagonal(m, 1), mx.diag(b, k=-1), mx.diag(m), mx.trace(m),
                        mx.trace(i, offset=1, dtype=mx.float32), mx.tri(3, 4, k=1))
    out["linalg"] = (mx.linalg.norm(a), mx.linalg.norm(a, axis=1), mx.linalg.norm(b, ord=1),
                     mx.linalg.norm(a, ord="fro", keepdims=True), mx.linalg.norm(a, ord=float("inf")),
                     mx.linalg.norm(b, ord=float("-inf")), mx.linalg.norm(b, ord=3),
                     mx.linalg.cross(a[:, :3], b[:3]))
    out["hadamard"] = mx.hadamard_transform(a), mx.hadamard_transform(m[:, :4], scale=1.0)
    out["dtypes"] = (mx.array(mx.finfo(mx.float16).max), mx.array(mx.finfo(mx.bfloat16).eps),
                     mx.array(mx.iinfo(mx.int32).min), mx.array(mx.issubdtype(mx.float16, mx.floating)),
                     mx.array(mx.issubdtype(mx.uint8, mx.signedinteger)),
                     mx.array(mx.issubdtype(mx.int32, mx.integer)), mx.array(mx.pi), mx.array(mx.e),
                     mx.zeros((2,), dtype=mx.result_type(i, mx.float16)),
                     mx.array(mx.can_cast(mx.int32, mx.float32)), mx.array(mx.can_cast(mx.uint32, mx.int32)))
    out["random_bits_draws"] = (mx.random.bernoulli(0.3, (8,), key=key), mx.random.permutation(6, key=key),
                                mx.random.permutation(mx.arange(5), key=key))

    x1, x2 = mx.array(n["m"][None, :, :]), mx.array(n["q"])  # [1, 4, 5], [1, 4, 3, 8]
    w1 = mx.array(n["w"][:6, :10].reshape(6, 2, 5))
    w2 = mx.array(n["w"][:4, :48].reshape(4, 3, 2, 8))
    out["conv"] = (mx.conv1d(x1, w1), mx.conv1d(x1, w1, stride=2, padding=1, dilation=2),
                   mx.conv2d(x2, w2, padding=(1, 0)), mx.conv2d(x2, w2[:, :, :, :4], groups=2),
                   mx.conv_general(x1, w1, padding=([2], [0]), input_dilation=2, flip=True),
                   mx.conv_transpose1d(x1, mx.array(n["w"][:3, :10].reshape(3, 2, 5)), stride=2, output_padding=1),
                   mx.conv_transpose2d(x2, w2, stride=(1, 2), padding=1),
                   mx.conv3d(mx.array(n["q"][None]), mx.array(n["w"][:2, :32].reshape(2, 1, 2, 2, 8))),
                   mx.convolve(b, mx.array([1.0, -2.0, 0.5])), mx.convolve(b, a[0], mode="same"))

    out["einsum"] = (mx.einsum("ij,jk->ik", a, m), mx.einsum("ij->j", a), mx.einsum("ii", m[:, :4]),
                     mx.einsum("bhqd,bhkd->bhqk", r, k), mx.einsum("i,j", b, b))

    # Boolean-mask assignment (masked_scatter); reading with a mask is refused, as in MLX.
    def masked(x, mask, v):
        x = mx.array(x)
        x[mask] = v
        return x
    out["mask_set"] = (masked(a, a > 0, 0.0), masked(a, a > 0, mx.arange(12).astype(mx.float32)),
                       masked(a, mx.array([True, False, True]), b), masked(i, i < 0, mx.array([7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18])),
                       masked(a, np.array([False, True, False]), 5.0), masked(a, [True, False, True], 1.0),
                       masked(a, True, 2.0), masked(a, False, 2.0))

    return {name: _to_numpy(val) for name, val in out.items()}


def _to_numpy(val):
    if isinstance(val, tuple):
        return tuple(_to_numpy(v) for v in val)
    return np.array(val)
