"""Which names of mlx.core (and mx.fast, mx.random, mx.linalg, mx.fft) rmlx.core lacks, and
why. MLX's names are recorded in tests/fixtures/python/mlx_names.json, so the check runs
without MLX:

    python scripts/python_missing_names.py            # with rmlx installed: list, and check
    ~/anchors/venv/bin/python scripts/python_missing_names.py --write   # refresh from MLX

The check fails (exit 1) when rmlx lacks a name that KNOWN_MISSING does not explain, or
has one that KNOWN_MISSING still lists, so the list below stays the truth. The pytest suite
runs the same check (tests/python/test_names.py).
"""

import importlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = os.path.join(ROOT, "tests", "fixtures", "python", "mlx_names.json")
SUBMODULES = ["core", "core.fast", "core.random", "core.linalg", "core.fft"]

# Names rmlx.core does not have, by reason. Keys are "module: reason".
KNOWN_MISSING = {
    "core: dtypes the core does not have (it has bool, uint8, uint32, int32, int64, float16, "
    "bfloat16, float32)": [
        "int8", "int16", "uint16", "uint64", "float64", "complex64",
        "conj", "conjugate", "real", "imag", "from_fp8", "to_fp8",
    ],
    "core: function transformations (rmlx has no autodiff or vectorizing map)": [
        "grad", "value_and_grad", "vjp", "jvp", "vmap", "custom_function", "checkpoint",
    ],
    "core: graph export and import": [
        "export_function", "import_function", "export_to_dot", "exporter", "FunctionExporter",
    ],
    "core: ops needing kernels the core lacks (scatter with reduction, segmented or masked "
    "matmuls, log-space scans, data-dependent output sizes, strided views of raw memory)": [
        "ArrayAt", "block_masked_mm", "segmented_mm", "qqmm", "gather_qqmm", "logcumsumexp",
        "unique", "as_strided",
    ],
    "core: dynamic slicing with array start indices (the core has slice_update_at along one "
    "axis; the general form is not written yet)": [
        "slice", "slice_update",
    ],
    "core: einsum_path (einsum contracts left to right; it plans no path)": ["einsum_path"],
    "core: streams and devices beyond one stream per device": [
        "ThreadLocalStream", "new_thread_local_stream", "new_thread_unsafe_stream",
        "set_default_stream", "clear_streams",
    ],
    "core: printing options, DLPack, buffers, distributed": [
        "PrintOptions", "printoptions", "get_printoptions", "set_printoptions", "from_dlpack",
        "get_array_buffer_size", "distributed", "depends", "ArrayIterator", "ArrayLike",
    ],
    "core: files (rmlx writes safetensors and .npy; gguf and .npz writers not yet)": [
        "save_gguf", "savez", "savez_compressed",
    ],
    "core: submodules (mx.fft needs complex numbers)": ["fft"],
    "fast: custom kernels and fused ops not in the core": [
        "metal_kernel", "cuda_kernel", "precompiled_cuda_kernel", "cross_entropy",
        "gated_delta_update",
    ],
    "random: multivariate_normal needs a matrix factorization (cholesky/svd)": [
        "multivariate_normal",
    ],
    "linalg: factorizations and solvers (MLX runs them on the CPU with LAPACK; rmlx has no "
    "LAPACK)": [
        "cholesky", "cholesky_inv", "det", "eig", "eigh", "eigvals", "eigvalsh", "inv", "lu",
        "lu_factor", "pinv", "qr", "slogdet", "solve", "solve_triangular", "svd", "tri_inv",
    ],
    "fft: no complex dtype": [
        "fft", "fft2", "fftfreq", "fftn", "fftshift", "ifft", "ifft2", "ifftn", "ifftshift",
        "irfft", "irfft2", "irfftn", "istft", "rfft", "rfft2", "rfftfreq", "rfftn", "stft",
    ],
}


def _names(pkg):
    out = {}
    for sub in SUBMODULES:
        try:
            m = importlib.import_module(f"{pkg}.{sub}")
        except ImportError:
            continue
        out[sub] = sorted(n for n in dir(m) if not n.startswith("_"))
    return out


def missing(rmlx_names, mlx_names):
    """{submodule: [names MLX has and rmlx lacks]}."""
    return {sub: [n for n in names if n not in rmlx_names.get(sub, [])]
            for sub, names in mlx_names.items()}


def explained():
    """{submodule: {name: reason}} from KNOWN_MISSING."""
    out = {}
    for key, names in KNOWN_MISSING.items():
        mod, _, reason = key.partition(": ")
        sub = "core" if mod == "core" else f"core.{mod}"
        for n in names:
            out.setdefault(sub, {})[n] = reason
    return out


def check(rmlx_names, mlx_names):
    """Problems: lacking names nobody explained, and explained names that now exist."""
    gone = missing(rmlx_names, mlx_names)
    why = explained()
    problems = []
    for sub, names in gone.items():
        for n in names:
            if n not in why.get(sub, {}):
                problems.append(f"rmlx.{sub} lacks {n!r} and KNOWN_MISSING does not say why")
    for sub, names in why.items():
        for n in names:
            if n in rmlx_names.get(sub, []):
                problems.append(f"rmlx.{sub} has {n!r} but KNOWN_MISSING still lists it")
            elif n not in mlx_names.get(sub, []):
                problems.append(f"KNOWN_MISSING lists {sub}.{n!r}, which MLX does not have")
    return problems


def main():
    if "--write" in sys.argv:
        import mlx.core as mx

        names = _names("mlx")
        with open(NAMES, "w") as f:
            json.dump({"mlx": mx.__version__, "names": names}, f, indent=0)
        print(f"wrote {sum(map(len, names.values()))} names to {NAMES}")
        return 0
    with open(NAMES) as f:
        mlx_names = json.load(f)["names"]
    ours = _names("rmlx")
    gone = missing(ours, mlx_names)
    why = explained()
    for sub, names in gone.items():
        total = len(mlx_names[sub])
        print(f"mlx.{sub}: {total - len(names)} of {total} names present")
        by_reason = {}
        for n in names:
            by_reason.setdefault(why.get(sub, {}).get(n, "(unexplained)"), []).append(n)
        for reason, ns in by_reason.items():
            print(f"  missing ({reason}): {' '.join(ns)}")
    problems = check(ours, mlx_names)
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
