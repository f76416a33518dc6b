"""MLX + mlx-lm beside `rmlx bench --random-weights --config FILE`: the same config.json, random
weights cast to bf16 and quantized as its `quantization` block says (mlx-lm's per-architecture
`quant_predicate` too: qwen3_moe's router at 8 bits), then mlx_lm's `generate_step` on one random
prompt, as `mlx_lm.benchmark` times it. Prints `mlx: prompt_tps=..., generation_tps=...` (medians).

usage: python mlx_random_model.py CONFIG [-p 512] [-g 128] [-n 3] [--device cpu|gpu]
"""
import argparse
import importlib
import json
import statistics
import time

import mlx.core as mx
import mlx.nn as nn

ap = argparse.ArgumentParser()
ap.add_argument("config")
ap.add_argument("-p", type=int, default=512)
ap.add_argument("-g", type=int, default=128)
ap.add_argument("-n", type=int, default=3)
ap.add_argument("--device", default="cpu")
a = ap.parse_args()
mx.set_default_device(mx.cpu if a.device == "cpu" else mx.gpu)

cfg = json.load(open(a.config))
arch = importlib.import_module(f"mlx_lm.models.{cfg['model_type']}")
model = arch.Model(arch.ModelArgs.from_dict(cfg))
q = cfg.get("quantization")
# the config's dtype (MLX's CPU gather_mm takes float32 only: the dense MoE config says float32)
dtype = {"float32": mx.float32, "float16": mx.float16}.get(cfg.get("torch_dtype"), mx.bfloat16)
model.set_dtype(dtype)
if q:
    qp = getattr(model, "quant_predicate", None)

    def pred(path, m):
        if not hasattr(m, "to_quantized") or m.weight.shape[-1] % q["group_size"] != 0:
            return False
        r = qp(path, m) if qp is not None else True
        return {"group_size": q["group_size"], "bits": q["bits"], "mode": "affine"} if r is True else r

    nn.quantize(model, class_predicate=pred)
mx.eval(model.parameters())
model.eval()

from mlx_lm.generate import generate_step  # noqa: E402

mx.random.seed(1)
prompt = mx.random.randint(100, cfg["vocab_size"] - 100, (a.p,))


def once():
    ts = []
    t0 = time.perf_counter()
    for _ in generate_step(prompt, model, max_tokens=a.g):
        ts.append(time.perf_counter())
    return a.p / (ts[0] - t0), (len(ts) - 1) / (ts[-1] - ts[0])


once()  # warm-up
runs = [once() for _ in range(a.n)]
for i, (p, g) in enumerate(runs):
    print(f"mlx trial {i + 1}: prompt_tps={p:.3f}, generation_tps={g:.3f}")
print(
    f"mlx: prompt_tps={statistics.median(r[0] for r in runs):.3f}, "
    f"generation_tps={statistics.median(r[1] for r in runs):.3f} (medians of {a.n}; mlx {mx.__version__})"
)
