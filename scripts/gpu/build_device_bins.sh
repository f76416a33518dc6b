#!/usr/bin/env bash
# Builds the release test binaries named on the command line (crate:test, e.g. rmlx:ops_matmul,
# or crate:lib for a crate's unit tests) plus the `rmlx` CLI, strips and gzips them into .devbin/
# (git-ignored) for the device tool. One cargo invocation for all of them: separate ones resolve
# features per package and rebuild the shared crates each time.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .devbin && mkdir -p .devbin
args=()
for spec in "$@"; do
  crate=${spec%%:*}; test=${spec#*:}
  args+=(-p "$crate")
  if [ "$test" = lib ]; then args+=(--lib); else args+=(--test "$test"); fi
done
json=$(cargo test --profile gpu-test "${args[@]}" --no-run --message-format=json 2>/dev/null)
for spec in "$@"; do
  crate=${spec%%:*}; test=${spec#*:}
  if [ "$test" = lib ]; then
    pat="\"name\":\"${crate//-/_}\",\"src_path\":[^}]*src/lib.rs"
    name="${crate}-lib"
  else
    pat="\"kind\":\[\"test\"\],\"crate_types\":\[\"bin\"\],\"name\":\"$test\""
    name=$test
  fi
  exe=$(echo "$json" | grep -E "\"package_id\":\"[^\"]*${crate}[#@ ]" | grep -E "$pat" | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
  [ -n "$exe" ] || { echo "building $spec failed" >&2; exit 1; }
  cp "$exe" ".devbin/$name" && strip ".devbin/$name" && gzip -1f ".devbin/$name"
done
cargo build --profile gpu-test -p rmlx-cli >/dev/null 2>&1
cp target/gpu-test/rmlx .devbin/rmlx-cli && strip .devbin/rmlx-cli && gzip -1f .devbin/rmlx-cli
du -sh .devbin/*
