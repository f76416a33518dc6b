#!/usr/bin/env bash
# Runs prebuilt test binaries on the lent GPU machine (which has no cargo).
#   here:   bash scripts/gpu/build_device_bins.sh     (release test binaries, stripped, into .devbin/)
#   there:  bash scripts/gpu/device_tests.sh [filter] (from the repository root)
# Fixtures are found through the absolute path the binaries were built with (/work/main), so
# that path is linked to this checkout first.
set -u
root=$PWD
if [ ! -e /work/main/tests/fixtures ]; then
  mkdir -p /work && rm -rf /work/main && ln -s "$root" /work/main
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
filter=${1:-}
# the binaries travel gzipped (one call carries at most 64 MiB)
for z in .devbin/*.gz; do [ -e "$z" ] && gunzip -f "$z"; done
chmod +x .devbin/* 2>/dev/null
[ -e .devbin/rmlx-cli ] && chmod -x .devbin/rmlx-cli
summary=()
for b in .devbin/*; do
  [ -x "$b" ] || continue
  name=$(basename "$b")
  echo "=== $name"
  log=$(mktemp)
  if timeout 300 "$b" --test-threads=4 $filter >"$log" 2>&1; then st=ok; else st="FAIL($?)"; fi
  grep -E -A3 "^test .*FAILED$|panicked" "$log" | grep -v "^note:\|stack backtrace" | head -40
  grep -E "skipped|GPU vs|greedy|diverge" "$log" | sort | uniq -c | head -20
  res=$(grep "test result" "$log" | tail -1 | sed 's/test result: //')
  summary+=("$(printf '%-22s %-9s %s' "$name" "$st" "$res")")
  [ -n "${OUT:-}" ] && cp "$log" "$OUT/$name.log" 2>/dev/null
  rm -f "$log"
done
echo "=== summary"
printf '%s\n' "${summary[@]}"
