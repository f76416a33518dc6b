#!/usr/bin/env bash
# Issue 6 on the GPU machine, one call, from the repository root (binaries from
# build_device_bins.sh in .devbin/): the test binaries, then rmlx's decode/prefill speed on
# random-weight models of the issue's shapes, with and without CUDA graph replay, and (when
# MLX=1 and the MLX-CUDA wheels were stashed, see /work/shared/anchors/GPU.md) MLX-CUDA's
# figures for the same shapes in the same call. A short table comes last.
#   SPEED_TESTS=0  skip the test binaries      SPEED_ONLY=smol|llama|moe  one shape
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export RMLX_KERNEL_CACHE=${RMLX_KERNEL_CACHE:-$HOME/.cache/rmlx/kernels}
[ "${SPEED_TESTS:-1}" = 1 ] && bash scripts/gpu/device_tests.sh 2>&1 | tail -40
for z in .devbin/*.gz; do [ -e "$z" ] && gunzip -f "$z"; done
R=./.devbin/rmlx-cli; chmod +x $R
C=scripts/bench/configs
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader
table=()
run() { # label, args...
  local label=$1; shift
  local log="$OUT/bench-$(echo "$label" | tr ' /' '__').log"
  timeout 300 "$@" >"$log" 2>&1; local rc=$?
  local avg; avg=$(grep '^Averages' "$log" | sed 's/Averages: //')
  table+=("$(printf '%-34s rc=%-3s %s' "$label" "$rc" "$avg")")
  grep -E "^Roofline|CUDA graph of" "$log" | sed "s/^/    [$label] /"
  [ $rc = 0 ] || tail -5 "$log"
}
only=${SPEED_ONLY:-}
if [ -z "$only" ] || [ "$only" = smol ]; then
  run "smollm2 q4 graph" $R bench --random-weights --config $C/smollm2-135m-q4.json --device gpu -p 512 -g 128 -n 5
  RMLX_CUDA_GRAPH=0 run "smollm2 q4 no-graph" $R bench --random-weights --config $C/smollm2-135m-q4.json --device gpu -p 512 -g 128 -n 3
  run "smollm2 bf16 graph" $R bench --random-weights --config $C/smollm2-135m-bf16.json --device gpu -p 512 -g 128 -n 3
fi
if [ -z "$only" ] || [ "$only" = llama ]; then
  run "llama8b q4 p512 g128" $R bench --random-weights --config $C/llama3.1-8b-q4.json --device gpu -p 512 -g 128 -n 3
  if [ "${SPEED_ABLATE:-1}" = 1 ]; then
    # each change of this session switched off alone: programmatic dependent launch, the int8 qmv
    RMLX_PDL=0 run "llama8b q4 p512 no-PDL" $R bench --random-weights --config $C/llama3.1-8b-q4.json --device gpu -p 512 -g 128 -n 2
    RMLX_QMV_EXACT=1 run "llama8b q4 p512 exact-qmv" $R bench --random-weights --config $C/llama3.1-8b-q4.json --device gpu -p 512 -g 128 -n 2
  fi
  RMLX_CUDA_GRAPH=0 run "llama8b q4 p512 no-graph" $R bench --random-weights --config $C/llama3.1-8b-q4.json --device gpu -p 512 -g 64 -n 2
  run "llama8b q4 p2048 (prefill)" $R bench --random-weights --config $C/llama3.1-8b-q4.json --device gpu -p 2048 -g 4 -n 3 --prefill-step-size 2048
  [ "${SPEED_LONG:-0}" = 1 ] && run "llama8b q4 p8192 g128" $R bench --random-weights --config $C/llama3.1-8b-q4.json --device gpu -p 8192 -g 128 -n 1 --prefill-step-size 2048
fi
if [ "${SPEED_BATCH:-0}" = 1 ]; then
  # batched decode (issue 8): total generation tok/s over all sequences
  run "llama8b q4 batches p128 g128" $R bench --random-weights --config $C/llama3.1-8b-q4.json --device gpu -b 1,4,8,16,64 -p 128 -g 128 -n 1
  grep -E "batch|Batch" "$OUT/bench-llama8b_q4_batches_p128_g128.log" | head -20
fi
if [ -z "$only" ] || [ "$only" = moe ]; then
  run "qwen3-30b-a3b q4 p512 g128" $R bench --random-weights --config $C/qwen3-30b-a3b-q4.json --device gpu -p 512 -g 128 -n 2
fi
if [ "${SPEED_NCU:-0}" = 1 ]; then
  # Per-kernel GPU times (Nsight Compute) of one decode step, launched op by op so each is seen.
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  ncu_sum() { python3 - "$1" <<'PY'
import re, sys
rows, name, inv = [], None, 1
for line in open(sys.argv[1], errors="replace"):
    if "Invocations" in line and line.startswith("  ") and not line.startswith("   "):
        name = line.strip().split(" ")[0]
        inv = int(re.search(r"Invocations\s+(\d+)", line).group(1))
    m = re.search(r"gpu__time_duration.sum\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", line)
    if m and name:
        unit, avg = m.group(1), float(m.group(4).replace(",", ""))
        us = avg / 1000 if unit.startswith("n") else (avg * 1000 if unit.startswith("m") else avg)
        rows.append((us * inv, name, us, inv))
rows.sort(reverse=True)
print(f"  total {sum(r[0] for r in rows):.1f} us over {sum(r[3] for r in rows)} kernels")
for t, n, us, k in rows[:16]:
    print(f"  {t:9.1f} us  {k:4d} x {us:8.2f} us  {n[:70]}")
PY
  }
  # warm caches (--cache-control none): the durations a replayed step sees
  RMLX_CUDA_GRAPH=0 timeout 240 $NCU --clock-control none --cache-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
    --launch-skip 20000 --launch-count 490 $R bench --random-weights --config $C/smollm2-135m-q4.json --device gpu -p 16 -g 64 -n 1 >"$OUT/ncu-smol.txt" 2>&1
  echo "=== ncu: smollm2 q4, 500 kernels of decode"; ncu_sum "$OUT/ncu-smol.txt"
  RMLX_CUDA_GRAPH=0 timeout 240 $NCU --clock-control none --cache-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
    --launch-skip 20000 --launch-count 650 $R bench --random-weights --config $C/llama3.1-8b-q4.json --device gpu -p 16 -g 64 -n 1 >"$OUT/ncu-llama.txt" 2>&1
  echo "=== ncu: llama8b q4, 650 kernels of decode"; ncu_sum "$OUT/ncu-llama.txt"
  # the whole replayed step as one workload: GPU time per token including the gaps between kernels
  timeout 240 $NCU --clock-control none --cache-control none --graph-profiling graph --metrics gpu__time_duration.sum \
    --launch-skip 2300 --launch-count 3 $R bench --random-weights --config $C/llama3.1-8b-q4.json --device gpu -p 16 -g 48 -n 1 >"$OUT/ncu-llama-graph.txt" 2>&1
  echo "=== ncu: llama8b q4, replayed steps (graph as one workload)"; grep -E "gpu__time_duration|==PROF==|==ERROR==|Graph|graph" "$OUT/ncu-llama-graph.txt" | head -12
fi
if [ "${MLX:-0}" = 1 ] && [ -f .devtools/anchors/gpu/run_part.sh ]; then
  MLX_BUDGET_S=${MLX_BUDGET_S:-240} MLX_ONLY=${MLX_ONLY:-q4} bash .devtools/anchors/gpu/run_part.sh mlx 2>&1 \
    | grep -E "^RESULT|error|Error" | cut -c1-400
fi
echo "=== rmlx bench averages"
printf '%s\n' "${table[@]}"
