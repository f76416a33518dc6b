#!/usr/bin/env bash
# On the GPU machine, from the repository root, with the binaries of build_device_bins.sh:
#   final_checks.sh tests      every test binary, then rmlx and PyTorch on SmolLM2-135M ($SMOL:
#                              the Q4_1 GGUF) side by side
#   final_checks.sh sanitize   compute-sanitizer memcheck over every test binary
set -u
mode=${1:-tests}
if [ "$mode" = tests ]; then
  bash scripts/gpu/device_tests.sh 2>&1 | tail -60
  if [ -n "${SMOL:-}" ] && [ -f "$SMOL" ]; then
    echo "=== SmolLM2-135M: rmlx (Q4_1 GGUF) and PyTorch (bf16, eager) in the same call"
    chmod +x .devbin/rmlx-cli
    ./.devbin/rmlx-cli generate -m "$SMOL" --device gpu --prompt "What is 2+2?" --max-tokens 16 2>&1 | tail -1
    ./.devbin/rmlx-cli bench -m "$SMOL" --device gpu -p 512 -g 128 -n 3 2>&1 | tail -1
    python3 scripts/bench/torch_smollm2_gpu.py scripts/bench/smollm2_135m_config.json 2>&1 | tail -1
  fi
else
  for z in .devbin/*.gz; do [ -e "$z" ] && gunzip -f "$z"; done
  chmod +x .devbin/*; chmod -x .devbin/rmlx-cli
  mkdir -p /work && { [ -e /work/main/tests/fixtures ] || ln -sfn "$PWD" /work/main; }
  CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  echo "=== compute-sanitizer memcheck ($CS)"
  for b in .devbin/*; do
    [ -x "$b" ] || continue
    n=$(basename "$b")
    out=$(timeout "${CS_TIMEOUT:-60}" "$CS" --tool memcheck --error-exitcode 9 "$b" --test-threads=4 2>&1); rc=$?
    printf '%-18s rc=%-4s %s | %s\n' "$n" "$rc" "$(echo "$out" | grep 'ERROR SUMMARY' | tail -1)" \
      "$(echo "$out" | grep 'test result' | tail -1)"
    echo "$out" | grep -E "Invalid|out of bounds|Address .* is" | head -5
  done
fi
