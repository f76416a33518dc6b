#!/usr/bin/env bash
# One call on the GPU machine: every carried test binary, then compute-sanitizer (memcheck) over
# each, then rmlx and PyTorch on SmolLM2-135M side by side. Expects the Q4_1 GGUF at $SMOL.
set -u
bash scripts/gpu/device_tests.sh 2>&1 | tail -40
echo "=== compute-sanitizer memcheck"
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
for b in .devbin/*; do
  [ -x "$b" ] || continue
  n=$(basename "$b")
  out=$(timeout ${CS_TIMEOUT:-90} "$CS" --tool memcheck --error-exitcode 9 "$b" --test-threads=2 2>&1); rc=$?
  errs=$(echo "$out" | grep -E "ERROR SUMMARY" | tail -1)
  printf '%-18s rc=%-4s %s | %s\n' "$n" "$rc" "$errs" "$(echo "$out" | grep 'test result' | tail -1)"
done
if [ -n "${SMOL:-}" ] && [ -f "$SMOL" ]; then
  echo "=== SmolLM2-135M: rmlx (Q4_1 GGUF) and PyTorch (bf16, eager) in the same call"
  chmod +x .devbin/rmlx-cli
  ./.devbin/rmlx-cli bench -m "$SMOL" --device gpu -p 512 -g 128 -n 3 2>&1 | tail -2
  ./.devbin/rmlx-cli bench -m "$SMOL" --device cpu -p 128 -g 32 -n 1 2>&1 | tail -1
  python3 scripts/bench/torch_smollm2_gpu.py scripts/bench/smollm2_135m_config.json 2>&1 | tail -1
fi
