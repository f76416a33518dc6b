#!/usr/bin/env bash
# The load test (scripts/loadtest.py) on the lent GPU machine (no cargo there: the CLI comes
# prebuilt in .devbin/ from build_device_bins.sh): `rmlx serve --random-weights` with the
# Llama-3.1-8B shape, 4-bit, at each client count in CLIENTS, from the repository root.
# Random weights and the ids-only tokenizer: every prompt word is token 0 and no EOS is ever
# picked on purpose, so each request generates about MAX_TOKENS tokens.
#   CLIENTS="1 8 16 64" DURATION=20 MAX_TOKENS=128 bash scripts/gpu/loadtest_gpu.sh
set -u
CLIENTS=${CLIENTS:-"1 8 16 64"}
DURATION=${DURATION:-20}
MAX_TOKENS=${MAX_TOKENS:-128}
CONFIG=${CONFIG:-scripts/bench/configs/llama3.1-8b-q4.json}
for z in .devbin/rmlx-cli.gz; do [ -e "$z" ] && gunzip -f "$z"; done
R=./.devbin/rmlx-cli; chmod +x $R
LOG=$(mktemp)
$R serve --random-weights --config "$CONFIG" --device ${DEVICE:-gpu} --port 0 --max-batch 64 ${SERVE_ARGS:-} 2>"$LOG" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
BASE=""
for _ in $(seq 1200); do
  BASE="$(grep -o 'listening on http://[0-9.:]*' "$LOG" | head -1 | cut -d' ' -f3)" || true
  [ -n "$BASE" ] && break
  kill -0 $SERVER 2>/dev/null || break
  sleep 0.1
done
[ -n "$BASE" ] || { echo "the server did not start:"; cat "$LOG"; exit 1; }
head -3 "$LOG"
for c in $CLIENTS; do
  python3 scripts/loadtest.py --url "$BASE" --clients "$c" --seconds "$DURATION" \
    --max-tokens "$MAX_TOKENS" | sed "s/^/rmlx gpu clients=$c: /" || echo "clients=$c: errors (above)"
done
