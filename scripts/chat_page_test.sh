#!/usr/bin/env bash
# The chat page (`rmlx serve`'s `/`) in headless Chromium with the real SmolLM2 model on the CPU
# (scripts/chat_page_test.py says what it checks). Installs what it lacks: Debian's chromium and
# chromium-driver with apt-get (as root, or with sudo) and Selenium into a private venv
# (${RMLX_CACHE:-~/.cache/rmlx}/venv-chromium). Without the model (scripts/fetch_models.sh) it
# skips, saying so, as the Rust tests that need it do.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${RMLX_CACHE:-$HOME/.cache/rmlx}"
MODEL="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
VENV="$CACHE/venv-chromium"
SELENIUM_VERSION=4.51.0
if [ ! -f "$MODEL" ]; then
  echo "chat_page_test.sh: SKIPPED: $MODEL is missing (run scripts/fetch_models.sh)" >&2
  exit 0
fi
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "chat_page_test.sh: installing chromium and chromium-driver with apt-get" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if ! "$VENV/bin/python" -c "import selenium, sys; sys.exit(selenium.__version__ != '$SELENIUM_VERSION')" 2>/dev/null; then
  echo "chat_page_test.sh: installing selenium==$SELENIUM_VERSION into $VENV" >&2
  python3 -m venv "$VENV" || { echo "chat_page_test.sh: python3 -m venv failed (install python3-venv)" >&2; exit 1; }
  "$VENV/bin/pip" install --quiet "selenium==$SELENIUM_VERSION"
fi
cargo build --quiet -p rmlx-cli
BIN="${CARGO_TARGET_DIR:-target}/debug/rmlx"
LOG="$(mktemp)"
# No prefix cache: a prompt that hits it is prefilled in other chunks (rmlx_lm::batch says so),
# which can change a greedy answer of this 4-bit model, and the test compares the page's answer
# with a second, non-streamed request for the same messages.
KEY="page-test-$$"
"$BIN" serve --model "$MODEL" --host 127.0.0.1 --port 0 --device cpu --api-key "$KEY" \
  --prefix-cache-mb 0 2>"$LOG" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -f "$LOG"' EXIT
BASE=""
for _ in $(seq 600); do
  BASE="$(grep -o 'listening on http://[0-9.:]*' "$LOG" | head -1 | cut -d' ' -f3)" || true
  [ -n "$BASE" ] && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$LOG" >&2; echo "chat_page_test.sh: rmlx serve exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$BASE" ] || { cat "$LOG" >&2; echo "chat_page_test.sh: rmlx serve did not listen within 60 s" >&2; exit 1; }
"$VENV/bin/python" scripts/chat_page_test.py "$BASE" "$KEY"
