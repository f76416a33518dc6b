#!/usr/bin/env bash
# The load test (scripts/loadtest.py) on the CPU with SmolLM2-135M Q4_1: `rmlx serve` (release
# build, 2 rayon threads) at each client count in CLIENTS, then llama-cpp-python's OpenAI server
# (the reference: it runs one request at a time; --interrupt_requests False so that a new request
# waits instead of cutting the running one short) at the same counts, in the same run.
#   CLIENTS="1 8" DURATION=60 MAX_TOKENS=64 bash scripts/bench/loadtest_cpu.sh
# The reference server needs the anchors' llama-cpp-python plus its server extras; this makes a
# venv for them under ${RMLX_CACHE:-~/.cache/rmlx} whose path file points at the anchors' packages.
set -euo pipefail
cd "$(dirname "$0")/../.."
A=${ANCHORS:-$HOME/anchors}
CACHE=${RMLX_CACHE:-$HOME/.cache/rmlx}
GGUF=${GGUF:-$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf}
CLIENTS=${CLIENTS:-"1 8"}
DURATION=${DURATION:-60}
MAX_TOKENS=${MAX_TOKENS:-64}
BIN=${BIN:-target/release/rmlx}
VENV=$CACHE/venv-llamaserver
[ -x "$BIN" ] || cargo build --release -p rmlx-cli
export RAYON_NUM_THREADS=2
LOG=$(mktemp)
SERVER=""
cleanup() {
  [ -n "$SERVER" ] && { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
  rm -f "$LOG"
}
trap cleanup EXIT

run_clients() { # name url
  for c in $CLIENTS; do
    python3 scripts/loadtest.py --url "$2" --clients "$c" --seconds "$DURATION" \
      --max-tokens "$MAX_TOKENS" | sed "s/^/$1 clients=$c: /" || echo "$1 clients=$c: errors (above)"
  done
}

"$BIN" serve --model "$GGUF" --device cpu --host 127.0.0.1 --port 0 2>"$LOG" &
SERVER=$!
BASE=""
for _ in $(seq 600); do
  BASE="$(grep -o 'listening on http://[0-9.:]*' "$LOG" | head -1 | cut -d' ' -f3)" || true
  [ -n "$BASE" ] && break
  sleep 0.1
done
[ -n "$BASE" ] || { cat "$LOG" >&2; exit 1; }
run_clients rmlx "$BASE"
cleanup
SERVER=""
LOG=$(mktemp)

if ! "$VENV/bin/python" -c "import llama_cpp.server.app" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$A/venv/bin/python" -c "import site; print(site.getsitepackages()[0])" \
    >"$("$VENV/bin/python" -c "import site; print(site.getsitepackages()[0])")/anchors.pth"
  "$VENV/bin/pip" install --quiet fastapi uvicorn sse-starlette starlette-context pydantic-settings
fi
PORT=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$VENV/bin/python" -m llama_cpp.server --model "$GGUF" --host 127.0.0.1 --port "$PORT" --n_ctx 2048 \
  --n_threads 2 --n_threads_batch 2 --interrupt_requests False >"$LOG" 2>&1 &
SERVER=$!
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break
  sleep 0.2
done
run_clients "llama.cpp $("$VENV/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)')" \
  "http://127.0.0.1:$PORT"
