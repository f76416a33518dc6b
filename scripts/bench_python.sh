#!/usr/bin/env bash
# rmlx.core next to mlx.core, same machine, same run: per-op Python overhead and 100 MB NumPy
# conversion (scripts/bench_python.py). Needs the rmlx venv of scripts/python_test.sh and an MLX
# venv (${MLX_PY:-~/anchors/venv/bin/python}).
set -euo pipefail
cd "$(dirname "$0")/.."
RMLX_PY="${RMLX_PYVENV:-$HOME/.cache/rmlx/pyvenv}/bin/python"
MLX_PY="${MLX_PY:-$HOME/anchors/venv/bin/python}"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "rmlx commit: $(git rev-parse --short HEAD)"
"$RMLX_PY" scripts/bench_python.py rmlx > /tmp/bench_rmlx.json
"$MLX_PY" scripts/bench_python.py mlx > /tmp/bench_mlx.json
"$RMLX_PY" - <<'PY'
import json
r = json.load(open("/tmp/bench_rmlx.json")); m = json.load(open("/tmp/bench_mlx.json"))
print(f"| per-op call (µs) | rmlx {r['version']} | mlx {m['version']} |")
print("|---|---:|---:|")
for k in r["us"]:
    print(f"| `{k}` | {r['us'][k]:.2f} | {m['us'][k]:.2f} |")
print()
print(f"| 100 MiB conversion (ms) | rmlx | mlx |")
print("|---|---:|---:|")
for k in r["ms"]:
    print(f"| {k} | {r['ms'][k]:.1f} | {m['ms'][k]:.1f} |")
PY
