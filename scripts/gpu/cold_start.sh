#!/usr/bin/env bash
# Issue 6's cold start on the GPU machine: a new `rmlx generate` process on SmolLM2's GGUF to its
# first generated token, the CUDA context and the model load included, on a warm kernel cache.
# The model is rebuilt from the parts scripts/gpu/cold_start/split_gguf.py packed here (the real
# file is over a call's carry limit; see that script): carry .devbin and the parts directory.
#   bash scripts/gpu/cold_start.sh [PARTS_DIR=.devbin3/smol] [RUNS=5]
set -u
parts=${1:-.devbin3/smol}; runs=${2:-5}
[ -e .devbin/rmlx-cli.gz ] && gunzip -f .devbin/rmlx-cli.gz
R=./.devbin/rmlx-cli; chmod +x $R
m=/tmp/smollm2-cold.gguf
python3 scripts/gpu/cold_start/assemble_gguf.py "$parts" $m || exit 1
gen() { $R generate -m $m --device gpu --ignore-chat-template --prompt "Write a haiku about the sea." --max-tokens 1 --verbose 2>&1; }
echo "first run (fills the kernel cache): $(gen | grep -E 'Load time|Prompt' | tr '\n' ' ')"
export TIMEFORMAT="%R"
for i in $(seq "$runs"); do
  s=$( { time gen >/tmp/cold.txt; } 2>&1 )
  echo "run $i: whole process ${s} s; $(grep -E 'Load time|Prompt' /tmp/cold.txt | tr '\n' ' ')"
done
