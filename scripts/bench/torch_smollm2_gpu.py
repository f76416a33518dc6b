"""PyTorch reference on the GPU for SmolLM2-135M's shape (random bf16 weights, eager
transformers, dynamic cache): prompt and generation tokens per second, as `rmlx bench` reports
them. Runs on the lent GPU machine (PyTorch + transformers are in its python3):
    python3 scripts/bench/torch_smollm2_gpu.py scripts/bench/smollm2_135m_config.json [-p 512] [-g 128]
"""
import argparse, json, statistics, time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("config")
ap.add_argument("-p", type=int, default=512)
ap.add_argument("-g", type=int, default=128)
ap.add_argument("-n", type=int, default=3)
a = ap.parse_args()
cfg = LlamaConfig(**json.load(open(a.config)))
torch.manual_seed(0)
m = LlamaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
ids = torch.randint(0, cfg.vocab_size, (1, a.p), device="cuda")


def timed(f):
    torch.cuda.synchronize()
    t = time.perf_counter()
    f()
    torch.cuda.synchronize()
    return time.perf_counter() - t


with torch.no_grad():
    prefill = lambda: m(ids)
    gen = lambda: m.generate(ids, max_new_tokens=a.g, min_new_tokens=a.g, do_sample=False)
    timed(prefill), timed(gen)  # warm-up
    pts, gts = [], []
    for _ in range(a.n):
        tp = timed(prefill)
        tg = timed(gen)
        pts.append(a.p / tp)
        gts.append(a.g / max(tg - tp, 1e-9))
print(f"torch {torch.__version__} {torch.cuda.get_device_name()}: prompt_tps={statistics.median(pts):.1f} "
      f"generation_tps={statistics.median(gts):.1f} (eager, bf16, medians of {a.n})")
