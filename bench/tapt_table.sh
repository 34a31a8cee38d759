#!/usr/bin/env bash
# Task-adaptive pretraining (Gururangan et al. 2020) of the shipped model on SST-2, as its own row:
#   1. the first ROWS rows of SST-2's train.tsv fine-tuned from the shipped model;
#   2. the shipped model's masked-LM pretraining continued on the text of the same ROWS rows
#      (`pretrain --task-data`, labels unused) for TAPT_EPOCHS epochs, then the same fine-tuning
#      from it.
# Fine-tuning as bench/dp_table.sh's SST-2 rows: q4 base and embeddings, LoRA on every linear layer,
# batch 32, 64 tokens, lr 2e-3, 10 % warmup, one epoch, seed 42, evaluated on glue-validation.tsv.
# Prints a Markdown table: the held-out MLM loss of the task text after 100 steps and at the end, accuracy, and the wall times.
#   bench/tapt_table.sh SST2_DIR [OUT] [ROWS] [TAPT_EPOCHS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: bench/tapt_table.sh SST2_DIR [OUT] [ROWS] [TAPT_EPOCHS] [THREADS]}"
out="${2:-runs/tapt-table}"
rows="${3:-20000}"
epochs="${4:-10}"
threads="${5:-0}"
cli="${EDGETUNE:-build/release/examples/edgetune}"
model=models/edgetune-mini-uncased
rm -rf "$out"
mkdir -p "$out"
head -n $((rows + 1)) "$data/train.tsv" >"$out/train.tsv"

finetune() {  # finetune NAME MODEL
  local start
  start=$(date +%s.%N)
  "$cli" train --model "$2" --train "$out/train.tsv" --eval "$data/glue-validation.tsv" --seed 42 \
    --quant q4 --quant-embeddings --method lora \
    --lora-targets query,key,value,attention.output,intermediate,output --epochs 1 --batch-size 32 \
    --max-length 64 --lr 2e-3 --warmup-ratio 0.1 --threads "$threads" --out "$out/$1" >"$out/$1.log" 2>&1
  echo "$(date +%s.%N) - $start" | bc
}
base_seconds=$(finetune base "$model")
start=$(date +%s.%N)
"$cli" pretrain --model "$model" --task-data "$out/train.tsv" --out "$out/tapt-model" --max-length 64 \
  --batch-size 32 --epochs "$epochs" --eval-split 0.05 --eval-every 100 --threads "$threads" \
  --seed 42 >"$out/tapt-model.log" 2>&1
tapt_seconds=$(echo "$(date +%s.%N) - $start" | bc)
tapt_ft_seconds=$(finetune tapt "$out/tapt-model")

/usr/bin/python3 - "$out" "$rows" "$epochs" "$base_seconds" "$tapt_seconds" "$tapt_ft_seconds" <<'PY'
import json, sys
out, rows, epochs, base_s, tapt_s, tapt_ft_s = sys.argv[1:]
mlm = [json.loads(l) for l in open(f"{out}/tapt-model/metrics.jsonl")]
mlm = [l for l in mlm if l.get("type") == "eval"]
acc = lambda name: [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl") if '"eval"' in l][-1]["accuracy"]
print("| model | held-out MLM loss on the task text (step 100 / end) | SST-2 accuracy (glue-validation) | seconds |")
print("|---|---|---|---|")
print(f"| shipped | - | {acc('base'):.4f} | {float(base_s):.0f} (fine-tuning) |")
print(f"| shipped + TAPT, {epochs} epochs on the {rows} rows' text | {mlm[0]['mlm_loss']:.3f} / {mlm[-1]['mlm_loss']:.3f} | "
      f"{acc('tapt'):.4f} | {float(tapt_s):.0f} (TAPT) + {float(tapt_ft_s):.0f} (fine-tuning) |")
PY
