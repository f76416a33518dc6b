#!/usr/bin/env bash
# Issue 7's CPU benchmark: a small Qwen3-MoE (8 experts, top 2; configs/qwen3-moe-small-*.json)
# with random weights, rmlx then MLX + mlx-lm on the CPU in the same run, same prompt and
# generation lengths. MLX's CPU quantized products are scalar loops (~0.5 tok/s here), so the
# defaults are short. Env: P (prompt tokens, 32), G (generated, 16), N (trials, 1),
# RMLX (binary, target/release/rmlx), PY (Python with mlx and mlx-lm, ~/anchors/venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."
P=${P:-32} G=${G:-16} N=${N:-1}
RMLX=${RMLX:-target/release/rmlx}
PY=${PY:-$HOME/anchors/venv/bin/python}
for q in q4 f32; do
  cfg=scripts/bench/configs/qwen3-moe-small-$q.json
  echo "== $cfg: prompt $P, generation $G, $N trial(s)"
  "$RMLX" bench --random-weights --config "$cfg" --device cpu -p "$P" -g "$G" -n "$N" 2>&1 | grep -E "Averages|Roofline"
  "$PY" scripts/bench/mlx_random_model.py "$cfg" -p "$P" -g "$G" -n "$N" --device cpu | tail -1
done
