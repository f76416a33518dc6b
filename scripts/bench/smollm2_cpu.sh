#!/usr/bin/env bash
# SmolLM2-135M Q4_1 on the CPU: rmlx beside llama.cpp (llama-cpp-python built from source, see
# ../shared/anchors/cpu/SETUP.md), interleaved runs in fresh processes, 2 threads, 512-token
# prompt and 128 greedy tokens. Prints one line per run and the medians.
#   ANCHORS=~/anchors REPEATS=3 bash scripts/bench/smollm2_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
A=${ANCHORS:-$HOME/anchors}
SHARED=${SHARED:-../shared}
GGUF=${GGUF:-${RMLX_CACHE:-$HOME/.cache/rmlx}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
REPEATS=${REPEATS:-3}
BIN=target/release/rmlx
[ -x "$BIN" ] || cargo build --release -p rmlx-cli
export RAYON_NUM_THREADS=2
out=$(mktemp)
for i in $(seq "$REPEATS"); do
  /usr/bin/time -f "rss_kb=%M" "$BIN" bench --model "$GGUF" -p 512 -g 128 -n 1 2>"$out.err" | grep Averages \
    | sed "s/^/rmlx run $i: /" | tee -a "$out"
  grep -h "rss_kb" "$out.err" | sed "s/^/rmlx run $i: /" | tee -a "$out"
  GGUF=$GGUF THREADS=2 /usr/bin/time -f "rss_kb=%M" "$A/venv/bin/python" "$SHARED/anchors/cpu/bench_llamacpp.py" \
    2>"$out.err" | sed "s/^/llama.cpp run $i: /" | tee -a "$out"
  grep -h "rss_kb" "$out.err" | sed "s/^/llama.cpp run $i: /" | tee -a "$out"
done
python3 - "$out" <<'PY'
import re, sys, json, statistics as st
r = {"rmlx": {"pp": [], "tg": [], "rss": []}, "llama.cpp": {"pp": [], "tg": [], "rss": []}}
for line in open(sys.argv[1]):
    who = "rmlx" if line.startswith("rmlx") else "llama.cpp"
    if "rss_kb=" in line:
        r[who]["rss"].append(int(line.split("rss_kb=")[1]) / 1024)
    elif who == "rmlx" and "Averages" in line:
        r[who]["pp"].append(float(re.search(r"prompt_tps=([\d.]+)", line).group(1)))
        r[who]["tg"].append(float(re.search(r"generation_tps=([\d.]+)", line).group(1)))
    elif who == "llama.cpp" and "{" in line:
        j = json.loads(line[line.index("{"):])
        r[who]["pp"].append(j["prefill_tok_s"]); r[who]["tg"].append(j["decode_tok_s"])
for k, v in r.items():
    print(f"{k:10s} median prompt {st.median(v['pp']):7.1f} tok/s  generation {st.median(v['tg']):7.1f} tok/s  peak RSS {st.median(v['rss']):6.0f} MiB")
PY
