#!/usr/bin/env bash
# Builds the Python module (crates/rmlx-python) as an abi3 wheel with maturin, installs it into
# a private venv and runs the pytest suite in tests/python.
#   scripts/python_test.sh               venv in ${RMLX_PYVENV:-~/.cache/rmlx/pyvenv}
#   scripts/python_test.sh -k parity     extra arguments go to pytest
# The build uses cargo's `dev` profile (RMLX_PY_PROFILE to change): its dependencies are
# built with the same settings as `cargo test --workspace`'s, so they are reused. (Not the `test`
# profile: `cargo rustc --profile test` builds the library as a test harness, which cannot link
# as an extension module.)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${RMLX_PYVENV:-$HOME/.cache/rmlx/pyvenv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" numpy pytest

WHEELS="${CARGO_TARGET_DIR:-target}/wheels"
rm -f "$WHEELS"/rmlx-*.whl
"$VENV/bin/maturin" build --profile "${RMLX_PY_PROFILE:-dev}" -m crates/rmlx-python/Cargo.toml -i "$VENV/bin/python" -o "$WHEELS" --quiet
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$WHEELS"/rmlx-*.whl

"$VENV/bin/python" scripts/python_stubs.py --check
"$VENV/bin/python" -m pytest -q tests/python "$@"
