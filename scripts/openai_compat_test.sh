#!/usr/bin/env bash
# `rmlx serve` checked with the official `openai` Python client (scripts/openai_compat_test.py).
# Makes its own venv (${RMLX_CACHE:-~/.cache/rmlx}/venv-openai) with a pinned client the first
# time; needs only python3 with venv and the debug `rmlx` binary (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RMLX_CACHE:-$HOME/.cache/rmlx}/venv-openai"
OPENAI_VERSION=1.109.1
if ! "$VENV/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
  echo "openai_compat_test.sh: installing openai==$OPENAI_VERSION into $VENV" >&2
  python3 -m venv "$VENV" || { echo "openai_compat_test.sh: python3 -m venv failed (install python3-venv)" >&2; exit 1; }
  "$VENV/bin/pip" install --quiet "openai==$OPENAI_VERSION"
fi
cargo build --quiet -p rmlx-cli
BIN="${CARGO_TARGET_DIR:-target}/debug/rmlx"
"$VENV/bin/python" scripts/openai_compat_test.py "$BIN"
