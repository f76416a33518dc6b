#!/usr/bin/env python3
"""llama.cpp's batched decoding (llama-cpp-python's low-level API), the reference for
`rmlx bench -b 1,4,16`: for each batch size B, B sequences with their own random prompts of
½..1½ × P tokens (the lengths rmlx's bench uses) are prefilled one by one, then decoded together,
one llama_decode of B tokens (one per sequence) per step, greedy, EOS ignored. Prints one line
per B: total generation tok/s over the decode steps (after a warm-up run of the same size).

    ~/anchors/venv/bin/python scripts/bench/llamacpp_batched.py --model M.gguf -b 1,4,16 -p 32 -g 64
"""
import argparse
import random
import time

import numpy as np
import llama_cpp as L

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("-b", default="1,4,16")
ap.add_argument("-p", type=int, default=32)
ap.add_argument("-g", type=int, default=64)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
sizes = [int(x) for x in a.b.split(",")]

L.llama_backend_init()
model = L.llama_model_load_from_file(a.model.encode(), L.llama_model_default_params())
vocab = L.llama_model_get_vocab(model)
n_vocab = L.llama_vocab_n_tokens(vocab)
rng = random.Random(0)


def run(B):
    cp = L.llama_context_default_params()
    cp.n_ctx = B * (2 * a.p + a.g + 8) + 64
    cp.n_batch = cp.n_ubatch = max(512, 2 * a.p)
    cp.n_seq_max = B
    cp.n_threads = cp.n_threads_batch = a.threads
    ctx = L.llama_init_from_model(model, cp)
    batch = L.llama_batch_init(max(B, 2 * a.p), 0, B)

    def decode(items):
        batch.n_tokens = 0
        for tok, pos, seq, logits in items:
            i = batch.n_tokens
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, logits
            batch.n_tokens += 1
        assert L.llama_decode(ctx, batch) == 0

    def argmax(i):
        return int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,))))

    pos, nxt = [], []
    for s in range(B):
        n = max(1, a.p // 2 + a.p * s // B)
        prompt = [rng.randrange(n_vocab) for _ in range(n)]
        decode([(t, j, s, j == n - 1) for j, t in enumerate(prompt)])
        pos.append(n)
        nxt.append(argmax(n - 1))
    t0 = time.perf_counter()
    for _ in range(a.g - 1):
        decode([(nxt[s], pos[s], s, True) for s in range(B)])
        for s in range(B):
            pos[s] += 1
            nxt[s] = argmax(s)
    dt = time.perf_counter() - t0
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    return B * (a.g - 1) / dt


for B in sizes:
    run(B)  # warm-up
    tps = run(B)
    print(f"llama.cpp {L.__version__} batch_size={B}, generation_tps={tps:.3f}, per_sequence_tps={tps / B:.3f}")
