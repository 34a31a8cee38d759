#!/usr/bin/env bash
# The whole of SST-2's training split (60,614 rows) with the shipped model, q4 base and embeddings,
# LoRA, under a 32 MiB budget: prints the plan, progress and the summary, whose VmHWM (the process's
# peak resident set) must be at most 32.0 MiB. MAX_STEPS (default 0: one whole epoch) shortens the
# run; the data set is loaded, packed and counted in full either way.
#   bench/sst2_memory_budget.sh [SHARED_DATA_DIR] [OUT] [MAX_STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data}/sst2/train.tsv"
out="${2:-runs/sst2-budget}"
max_steps="${3:-0}"
rm -rf "$out"
/usr/bin/time -f "VmHWM by /usr/bin/time: %M KiB, %e s" \
  build/release/examples/edgetune train --model models/edgetune-mini-uncased --train "$data" \
  --eval-split 0.01 --seed 42 --quant q4 --quant-embeddings --method lora --memory-budget 32M \
  --epochs 1 --max-steps "$max_steps" --batch-size 32 --max-length 64 --lr 1e-3 --log-every 25 \
  --out "$out"
