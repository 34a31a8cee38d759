#!/usr/bin/env bash
# Masked-LM objectives at equal compute: the shipped model's shape and vocabulary, from the same
# random initialisation (create-model --seed 0), pretrained for STEPS steps on the shipped model's
# corpus (scripts/fetch_corpus.sh) once with piece-by-piece masking and once with whole-word
# masking (--whole-word-masking). Same data, order, learning-rate schedule (2e-3, 6 % warmup,
# linear decay to 0 at STEPS) and masked-token rate, so the same compute. Then each is fine-tuned
# as the TAPT and DP tables' SST-2 rows (the first ROWS rows of train.tsv, q4 base and embeddings,
# LoRA on every linear layer, batch 32, 64 tokens, lr 2e-3, 10 % warmup, one epoch) and evaluated
# on glue-validation.tsv.
# Held-out loss is masked piece by piece for both runs (pretrain.h), which favours the run trained
# that way; the fine-tuning accuracy is the comparison that does not.
# Prints a Markdown table and draws both pretraining runs into OUT/objectives.svg.
#   bench/objective_table.sh SST2_DIR [OUT] [STEPS] [ROWS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: bench/objective_table.sh SST2_DIR [OUT] [STEPS] [ROWS] [THREADS]}"
out="${2:-runs/objective-table}"
steps="${3:-600}"
rows="${4:-20000}"
threads="${5:-1}"
cli="${EDGETUNE:-build/release/examples/edgetune}"
corpus=.cache/corpus
scripts/fetch_corpus.sh "$corpus" >/dev/null
rm -rf "$out"
mkdir -p "$out"
head -n $((rows + 1)) "$data/train.tsv" >"$out/train.tsv"
"$cli" create-model --vocab models/edgetune-mini-uncased/vocab.txt --out "$out/init" \
  --layers 4 --hidden 192 --heads 4 --intermediate 768 --max-positions 128 --seed 0 >/dev/null

for objective in mlm wwm; do
  flag=()
  [ "$objective" = wwm ] && flag=(--whole-word-masking)
  start=$(date +%s.%N)
  "$cli" pretrain --model "$out/init" --corpus "$corpus/sotu.txt" "$corpus/moby-dick.txt" "$corpus/brown.txt" \
    --out "$out/$objective" --max-length 128 --batch-size 32 --lr 2e-3 --adam-beta2 0.98 \
    --warmup-ratio 0.06 --max-steps "$steps" --dropout 0 --seed 42 --threads "$threads" \
    --eval-every 100 --log-every 50 "${flag[@]}" >"$out/$objective.log" 2>&1
  echo "$(date +%s.%N) - $start" | bc >"$out/$objective.seconds"
  "$cli" train --model "$out/$objective" --train "$out/train.tsv" --eval "$data/glue-validation.tsv" --seed 42 \
    --quant q4 --quant-embeddings --method lora \
    --lora-targets query,key,value,attention.output,intermediate,output --epochs 1 --batch-size 32 \
    --max-length 64 --lr 2e-3 --warmup-ratio 0.1 --threads "$threads" --out "$out/$objective-sst2" \
    >"$out/$objective-sst2.log" 2>&1
done
"$cli" plot "$out/mlm" "$out/wwm" --out "$out/objectives.svg" >/dev/null

/usr/bin/python3 - "$out" "$steps" "$rows" <<'PY'
import json, sys
out, steps, rows = sys.argv[1:]
def metrics(run):
    return [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")]
print(f"| objective | steps | tokens | seconds | held-out MLM loss / accuracy (piece masking) | SST-2 accuracy ({rows} rows, q4 + LoRA) |")
print("|---|---|---|---|---|---|")
for name, label in (("mlm", "masked pieces"), ("wwm", "whole-word masking")):
    m = metrics(name)
    ev = [l for l in m if l.get("type") == "eval"][-1]
    tokens = [l for l in m if l.get("type") == "train"][-1].get("tokens_seen", "-")
    acc = [l for l in metrics(name + "-sst2") if l.get("type") == "eval"][-1]["accuracy"]
    secs = float(open(f"{out}/{name}.seconds").read())
    print(f"| {label} | {steps} | {tokens} | {secs:.0f} | {ev['mlm_loss']:.3f} / {ev['mlm_accuracy']:.3f} | {acc:.4f} |")
PY
