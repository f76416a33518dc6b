"""MLX-CUDA decode on a quantized KV cache (mlx-lm's `kv_bits`, group 64, quantized from the first
token) beside its standard cache: 32 generated tokens after 2,048- and 8,192-token prompts for
the random-weight 4-bit Llama-3.1-8B shape (mlx_bench.build), the same commands as
`rmlx bench ... -p P -g 32 --kv-bits B`. One warm-up, then the median of 2. A configuration
MLX cannot run prints its error and the script goes on (MLX-CUDA 0.32.4 fails every kv_bits
decode step here: docs/PERF.md, call C9)."""
import os, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mlx_bench as mb
import mlx.core as mx
from mlx_lm.generate import generate_step

def decode(model, prompt, kv_bits):
    ts = []
    extra = {} if kv_bits is None else {"kv_bits": kv_bits, "kv_group_size": 64, "quantized_kv_start": 0}
    for _ in generate_step(prompt, model, max_tokens=33, prefill_step_size=2048, **extra):
        ts.append(time.perf_counter())
    return 32 / (ts[-1] - ts[0])

for name in sys.argv[1:]:
    model, _, _ = mb.build(name, 4)
    vocab = model.args.vocab_size
    mx.random.seed(5)
    for P in (2048, 8192):
        prompt = mx.random.randint(100, vocab - 100, (P,))
        for bits in (None, 8, 4):
            label = "standard" if bits is None else f"kv_bits {bits}"
            try:
                decode(model, prompt, bits)
                tps = statistics.median(decode(model, prompt, bits) for _ in range(2))
            except RuntimeError as e:  # MLX-CUDA 0.32.4: no quantized_matmul for these shapes
                print(f"MLX {name} q4 prompt {P} {label}: fails: {e}", flush=True)
                continue
            print(f"MLX {name} q4 prompt {P} {label}: generation_tps={tps:.1f}", flush=True)
    del model
    mx.clear_cache()
