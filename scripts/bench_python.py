"""Python-side costs of rmlx.core next to mlx.core, in one run:
per-op call overhead (building a lazy op; building + evaluating a tiny one) and the time to move
a 100 MB NumPy array in and out.

    scripts/bench_python.sh        runs this under both frameworks on the same machine
    python scripts/bench_python.py rmlx|mlx   one framework (prints a JSON line)
"""

import json
import sys
import timeit

import numpy as np


def best(stmt, number, repeat=7):
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number


def main(which):
    if which == "mlx":
        import mlx.core as mx
    else:
        import rmlx.core as mx
    mx.set_default_device(mx.cpu)
    a = mx.ones((16, 16))
    b = mx.ones((16,))
    mx.eval(a, b)
    us = {}
    n = 20000
    us["mx.add(a, b)"] = best(lambda: mx.add(a, b), n)
    us["a + b"] = best(lambda: a + b, n)
    us["a * 2.0"] = best(lambda: a * 2.0, n)
    us["mx.sum(a, axis=0)"] = best(lambda: mx.sum(a, axis=0), n)
    us["a[1:3, ::2]"] = best(lambda: a[1:3, ::2], n)
    us["a.reshape(256)"] = best(lambda: a.reshape(256), n)
    us["mx.array(1.5)"] = best(lambda: mx.array(1.5), n)
    us["mx.eval(a + b)"] = best(lambda: mx.eval(a + b), n // 10)
    us["(a + b).item() on [16]"] = best(lambda: (b + b)[0].item(), n // 10)
    us = {k: v * 1e6 for k, v in us.items()}

    x = np.random.default_rng(0).standard_normal(25 * 1024 * 1024).astype(np.float32)  # 100 MiB
    ms = {}

    def to_mx():
        y = mx.array(x)
        mx.eval(y)
        return y

    ms["numpy -> mx.array (copy), 100 MiB f32"] = best(to_mx, 1, 5) * 1e3
    y = to_mx()
    ms["np.array(mx array) (copy), 100 MiB"] = best(lambda: np.array(y), 1, 5) * 1e3
    ms["np.asarray(mx array) (view), 100 MiB"] = best(lambda: np.asarray(y), 1, 5) * 1e3
    ro = x.copy()
    ro.flags.writeable = False
    ms["read-only numpy -> mx.array, 100 MiB"] = best(lambda: mx.eval(mx.array(ro)), 1, 5) * 1e3
    print(json.dumps({"framework": which, "version": mx.__version__, "us": us, "ms": ms}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "rmlx")
