#!/usr/bin/env bash
# Issue 6 on the GPU machine, one call, from the repository root (binaries from
# build_device_bins.sh in .devbin/): the test binaries, then rmlx's decode/prefill speed on
# random-weight models of the issue's shapes, with and without CUDA graph replay, and (when
# MLX=1 and the MLX-CUDA wheels were stashed, see /work/shared/anchors/GPU.md) MLX-CUDA's
# figures for the same shapes in the same call. A short table comes last.
#   SPEED_TESTS=0  skip the test binaries      SPEED_ONLY=smol|llama  one shape
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
  RMLX_CUDA_GRAPH=0 run "llama8b q4 p512 no-graph" $R bench --random-weights --config $C/llama3.1-8b-q4.json --device gpu -p 512 -g 64 -n 2
  run "llama8b q4 p2048 (prefill)" $R bench --random-weights --config $C/llama3.1-8b-q4.json --device gpu -p 2048 -g 4 -n 3 --prefill-step-size 2048
  [ "${SPEED_LONG:-0}" = 1 ] && run "llama8b q4 p8192 g128" $R bench --random-weights --config $C/llama3.1-8b-q4.json --device gpu -p 8192 -g 128 -n 1 --prefill-step-size 2048
fi
if [ "${MLX:-0}" = 1 ] && [ -f .devtools/anchors/gpu/run_part.sh ]; then
  MLX_BUDGET_S=${MLX_BUDGET_S:-240} MLX_ONLY=${MLX_ONLY:-q4} bash .devtools/anchors/gpu/run_part.sh mlx 2>&1 \
    | grep -E "^RESULT|error|Error" | cut -c1-400
fi
echo "=== rmlx bench averages"
printf '%s\n' "${table[@]}"
