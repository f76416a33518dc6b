#!/usr/bin/env bash
# rmlx beside MLX-CUDA on the lent GPU, in three back-to-back calls on one warm machine (the
# mlx-cuda-13 wheel is over a call's 64 MiB). Here, first:
#   pip download (../shared/anchors/GPU.md) into W/, then split the wheel into
#   .devtools/.whl/p1a/mlxcuda.part1a, p1b/mlxcuda.part1b (30,000,000 bytes each) and
#   p2/mlxcuda.part2 (the rest) with the two small wheels in p2/; copy
#   ../shared/anchors/gpu/mlx_bench.py and this folder's mlx_prefill.py and mlx_kvbits.py to
#   .devtools/anchors/gpu/,
#   and the rmlx binary (gzipped) to .devtools/rmlx-cli.gz.
# Then three calls: `bash scripts/gpu/mlx_call.sh p1a` (carry .devtools/.whl/p1a), `… p1b`, and
# `… p2` (carry .devtools/.whl/p2, .devtools/rmlx-cli.gz, .devtools/anchors): each stashes its
# part; the last also runs rmlx, the PyTorch GEMM ceiling and MLX-CUDA on the same shapes.
part=$1
mkdir -p ~/stash && cp .devtools/.whl/$part/* ~/stash/ && ls ~/stash
[ "$part" = p2 ] || exit 0
R=.devtools/rmlx-cli; gunzip -f $R.gz; chmod +x $R
C=scripts/bench/configs
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for m in qwen3-30b-a3b-q4.json llama3.1-8b-q4.json; do
  echo "-- rmlx $m p512 g128"; $R bench --random-weights --config $C/$m --device gpu -p 512 -g 128 -n 3 2>&1 | grep -E "Averages|rror"
  echo "-- rmlx $m p2048 (one step)"; $R bench --random-weights --config $C/$m --device gpu -p 2048 -g 4 -n 3 --prefill-step-size 2048 2>&1 | grep -E "Averages|rror"
done
python3 - <<'PY'
import torch, time
a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda"); b = torch.randn_like(a)
for _ in range(3): a @ b
torch.cuda.synchronize(); ts = []
for _ in range(10):
    t = time.perf_counter(); a @ b; torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
ts.sort(); print(f"torch bf16 GEMM 8192^3: {2 * 8192**3 / ts[5] / 1e12:.1f} TFLOP/s (median of 10)")
PY
W=~/stash/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl
cat ~/stash/mlxcuda.part1a ~/stash/mlxcuda.part1b ~/stash/mlxcuda.part2 > $W
echo "94cb48fba73e5ee39467e51c35c51c691123359ca17bafd1a24cf92ad6732bee  $W" | sha256sum -c || exit 4
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir $W ~/stash/mlx-0.32.4-*.whl ~/stash/mlx_lm-0.32.2-py3-none-any.whl 2>&1 | tail -3
SP=$(python3 -c 'import site; print(site.getsitepackages()[0])')
export LD_LIBRARY_PATH=$(ls -d "$SP"/nvidia/*/lib 2>/dev/null | tr '\n' ':')$LD_LIBRARY_PATH
command -v nvcc >/dev/null && export CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc)")")}
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
python3 .devtools/anchors/gpu/mlx_prefill.py qwen3-30b-a3b llama3.1-8b 2>&1 | grep -v "^\[" | tail -20
# decode on a quantized KV cache, both systems (where mlx_kvbits.py was copied)
if [ -e .devtools/anchors/gpu/mlx_kvbits.py ]; then
  M=$C/llama3.1-8b-q4.json
  for p in 2048 8192; do
    for kv in "" "--kv-bits 8" "--kv-bits 4"; do
      echo "-- rmlx 8B p$p g32 ${kv:-standard}"; $R bench --random-weights --config $M --device gpu -p $p -g 32 -n 2 $kv 2>&1 | grep -E "Averages|rror"
    done
  done
  timeout 300 python3 .devtools/anchors/gpu/mlx_kvbits.py llama3.1-8b 2>&1 | grep -v "^\[" | tail -12
fi
