#!/usr/bin/env bash
# llama.cpp's Q4_0 / Q8_0 matrix-vector product on the CPU at the issue-3 shapes, beside rmlx's
# (rotating weights as `cargo bench -p rmlx --bench qmatmul` does; ROTATE_MIB=0: one matrix
# repeated, test-backend-ops' mode). Builds scripts/bench/ggml_qmv.c against the ggml that
# llama-cpp-python installed into the anchors venv (../shared/anchors/cpu/SETUP.md).
#   ANCHORS=~/anchors ROTATE_MIB=128 ROUNDS=9 bash scripts/bench/ggml_qmv.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
A=${ANCHORS:-$HOME/anchors}
SP=$(ls -d "$A"/venv/lib/python3*/site-packages | head -1)
LIB="$SP/llama_cpp/lib"
BIN=target/ggml_qmv
mkdir -p target
cc -O2 -o "$BIN" scripts/bench/ggml_qmv.c -I"$SP/include" -L"$LIB" -lggml-cpu -lggml-base -lggml \
  -Wl,-rpath,"$LIB"
for shape in "4096 4096" "4096 14336" "14336 4096"; do
  for t in q4_0 q8_0; do
    # ggml's N×K: N output rows, K per row (rmlx's bench prints the same N and K)
    # the repacking buffer reorders Q4_0 here (q4_0_8x8 on AVX-512); it has no Q8_0 layout on this
    # CPU (Q8_0 weights crash in it), so llama.cpp keeps Q8_0 in the plain buffer: plain only
    modes="plain"; [ $t = q4_0 ] && modes="plain repack"
    for mode in $modes; do
      # (the repacking buffer logs each tensor it reorders)
      "$BIN" $shape $t "${THREADS:-2}" "${ROTATE_MIB:-128}" "${ROUNDS:-9}" $mode 2>&1 | grep -v '^repack:' \
        || echo "ggml $t $mode $shape: not run (this ggml has no such buffer for it)"
    done
  done
done
