#!/usr/bin/env bash
# Builds the release test binaries named on the command line (crate:test, e.g. rmlx:ops_matmul,
# or crate:lib for a crate's unit tests)
# plus the `rmlx` CLI, strips them and puts them in .devbin/ (git-ignored) for the device tool.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .devbin && mkdir -p .devbin
for spec in "$@"; do
  crate=${spec%%:*}; test=${spec#*:}
  if [ "$test" = lib ]; then sel=(--lib); else sel=(--test "$test"); fi
  exe=$(cargo test --profile gpu-test -p "$crate" "${sel[@]}" --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
  [ -n "$exe" ] || { echo "building $spec failed" >&2; exit 1; }
  [ "$test" = lib ] && test="${crate}-lib"
  cp "$exe" ".devbin/$test" && strip ".devbin/$test" && gzip -1f ".devbin/$test"
done
cargo build --profile gpu-test -p rmlx-cli >/dev/null 2>&1
cp target/gpu-test/rmlx .devbin/rmlx-cli && strip .devbin/rmlx-cli && gzip -1f .devbin/rmlx-cli
du -sh .devbin/*
