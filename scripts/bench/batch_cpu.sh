#!/usr/bin/env bash
# Batched decoding of SmolLM2-135M Q4_1 on the CPU, short prompts: rmlx's batch engine (`rmlx
# bench -b B --ragged`, what `-b 1,4,16,64` runs per size; its batch 1 is rmlx's own reference)
# beside llama.cpp's batched decoding (scripts/bench/llamacpp_batched.py, llama-cpp-python). One
# fresh process per size, rmlx then llama.cpp at each (a pair shares the machine's state), 2
# threads each, the same prompt lengths (½..1½ × P random tokens) and G greedy tokens, EOS
# ignored. Prints every line and, per batch size, the median total generation tok/s and ratios.
#   ROUNDS=2 SIZES=1,4,16,64 P=32 G=64 bash scripts/bench/batch_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
A=${ANCHORS:-$HOME/anchors}
GGUF=${GGUF:-${RMLX_CACHE:-$HOME/.cache/rmlx}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
ROUNDS=${ROUNDS:-2}
SIZES=${SIZES:-1,4,16,64}
P=${P:-32}
G=${G:-64}
BIN=${BIN:-target/release/rmlx}
[ -x "$BIN" ] || cargo build --release -p rmlx-cli
export RAYON_NUM_THREADS=2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for i in $(seq "$ROUNDS"); do
  for b in ${SIZES//,/ }; do
    echo "# $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$BIN" bench --model "$GGUF" --device cpu -b "$b" --ragged -p "$P" -g "$G" -n 1 2>/dev/null \
      | sed "s/^/rmlx round $i: /" | tee -a "$out"
    "$A/venv/bin/python" scripts/bench/llamacpp_batched.py --model "$GGUF" -b "$b" -p "$P" -g "$G" \
      --threads 2 2>/dev/null | sed "s/^/llama.cpp round $i: /" | tee -a "$out"
  done
done
python3 - "$out" <<'PY'
import re, sys, statistics as st
r = {}
for line in open(sys.argv[1]):
    m = re.search(r"batch_size=(\d+), generation_tps=([\d.]+)", line)
    if m:
        who = line.split(" round")[0]
        r.setdefault(int(m.group(1)), {}).setdefault(who, []).append(float(m.group(2)))
b1 = st.median(r[1]["rmlx"]) if 1 in r else None
print("batch | rmlx tok/s (median) | vs rmlx batch 1 | llama.cpp tok/s (median) | rmlx / llama.cpp")
for b in sorted(r):
    x, y = st.median(r[b]["rmlx"]), st.median(r[b]["llama.cpp"])
    print(f"{b:5d} | {x:8.1f} | {x / b1 if b1 else float('nan'):5.2f}x | {y:8.1f} | {x / y:5.2f}x")
PY
