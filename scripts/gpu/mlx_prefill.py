"""MLX-CUDA prefill (512 and 2048 prompt tokens, time to first token) and decode (127 steps after
a 512-token prompt) for the random-weight 4-bit Qwen3-30B-A3B and Llama-3.1-8B shapes; the
models come from mlx_bench.build. Medians of 3 after a warm-up."""
import os, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mlx_bench as mb
import mlx.core as mx
from mlx_lm.generate import generate_step

def run(model, prompt, n):
    ts = []
    t0 = time.perf_counter()
    for _ in generate_step(prompt, model, max_tokens=n):
        ts.append(time.perf_counter())
    return ts[0] - t0, (ts[-1] - ts[0]) if n > 1 else 0.0

for name in sys.argv[1:]:
    model, total, per_tok = mb.build(name, 4)
    vocab = model.args.vocab_size
    mx.random.seed(3)
    for P in (512, 2048):
        prompt = mx.random.randint(100, vocab - 100, (P,))
        run(model, prompt, 1)
        ttft = statistics.median(run(model, prompt, 1)[0] for _ in range(3))
        print(f"MLX {name} q4 prompt {P}: prefill_tps={P / ttft:.1f}", flush=True)
    prompt = mx.random.randint(100, vocab - 100, (512,))
    run(model, prompt, 8)
    dec = statistics.median(run(model, prompt, 128)[1] for _ in range(2))
    print(f"MLX {name} q4 prompt 512: generation_tps={127 / dec:.1f}", flush=True)
    del model
    mx.clear_cache()
