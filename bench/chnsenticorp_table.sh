#!/usr/bin/env bash
# ChnSentiCorp test accuracy of models/edgetune-mini-chinese, beside the same shape from random
# initialisation (the weights its pretraining started from: `create-model --seed 0` on the model's
# vocabulary, see its model card) and a task-adapted copy of it. Trains on train.tsv (9,600 rows),
# evaluates on test.tsv (1,200 rows) after each epoch; batch 32, max length 128, seed 42. Rows:
#   q4-lora     the model, q4 base and embeddings, LoRA on all six linear modules, lr 2e-3, 3 epochs
#   full        the model, full fine-tuning, lr 1e-4, 3 epochs
#   random-full the random initialisation, full fine-tuning, lr 1e-4, 3 epochs
#   random-q4-lora  the random initialisation, q4-lora's fine-tuning
#   tapt-q4-lora  the model's masked-LM pretraining continued on the text of train.tsv (labels
#               unused, 3 epochs), then q4-lora's fine-tuning from it
# Prints each run's command and a Markdown table (accuracy after each epoch, wall seconds); the run
# folders and logs go to OUT. ROWS (default q4-lora full random-full tapt-q4-lora) picks rows, so
# that they can run side by side, one thread each. MODEL (default models/edgetune-mini-chinese)
# measures another pretrained folder of the same vocabulary; SEED (default 42) seeds every run.
#   bench/chnsenticorp_table.sh CHNSENTICORP_DIR [OUT] [THREADS] [ROWS...]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: bench/chnsenticorp_table.sh CHNSENTICORP_DIR [OUT] [THREADS] [ROWS...]}"
out="${2:-runs/chnsenticorp}"
threads="${3:-1}"
shift $(( $# < 3 ? $# : 3 ))
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(q4-lora full random-full tapt-q4-lora)
cli="${EDGETUNE:-build/release/examples/edgetune}"
model="${MODEL:-models/edgetune-mini-chinese}"
for f in train.tsv test.tsv; do
  [ -f "$data/$f" ] || { echo "chnsenticorp_table: $data/$f: no such file (expected ChnSentiCorp's $f)" >&2; exit 1; }
done
mkdir -p "$out"

seed="${SEED:-42}"
common=(--train "$data/train.tsv" --eval "$data/test.tsv" --epochs 3 --batch-size 32
        --max-length 128 --warmup-ratio 0.1 --seed "$seed" --threads "$threads" --log-every 50)
lora=(--quant q4 --quant-embeddings --method lora
      --lora-targets query,key,value,attention.output,intermediate,output --lr 2e-3)
full=(--method full --lr 1e-4)

run() {  # run NAME MODEL ARGS...
  local name="$1" m="$2" start
  shift 2
  rm -rf "${out:?}/$name"
  echo "== $name: $cli train --model $m ${common[*]} $* --out $out/$name"
  start=$(date +%s)
  "$cli" train --model "$m" "${common[@]}" "$@" --out "$out/$name" 2>"$out/$name.log"
  echo $(( $(date +%s) - start )) >"$out/$name.seconds"
}

random_init() {  # the shape's random initialisation, once
  [ -f "$out/random-init/model.safetensors" ] ||
    "$cli" create-model --vocab "$model/vocab.txt" --out "$out/random-init" --layers 4 --hidden 192 \
      --heads 4 --intermediate 768 --max-positions 128 --seed 0
}

for row in "${rows[@]}"; do
  case $row in
    q4-lora) run q4-lora "$model" "${lora[@]}" ;;
    full) run full "$model" "${full[@]}" ;;
    random-full) random_init; run random-full "$out/random-init" "${full[@]}" ;;
    random-q4-lora) random_init; run random-q4-lora "$out/random-init" "${lora[@]}" ;;
    tapt-q4-lora)
      rm -rf "$out/tapt-model"
      echo "== tapt: $cli pretrain --model $model --task-data $data/train.tsv --out $out/tapt-model --max-length 128 --batch-size 32 --epochs 3 --eval-split 0.05 --eval-every 100 --threads $threads --seed $seed"
      start=$(date +%s)
      "$cli" pretrain --model "$model" --task-data "$data/train.tsv" --out "$out/tapt-model" \
        --max-length 128 --batch-size 32 --epochs 3 --eval-split 0.05 --eval-every 100 \
        --threads "$threads" --seed "$seed" 2>"$out/tapt-model.log"
      echo $(( $(date +%s) - start )) >"$out/tapt-model.seconds"
      run tapt-q4-lora "$out/tapt-model" "${lora[@]}" ;;
    *) echo "chnsenticorp_table: unknown row $row (expected q4-lora, full, random-full, random-q4-lora or tapt-q4-lora)" >&2; exit 1 ;;
  esac
done

/usr/bin/python3 - "$out" "${rows[@]}" <<'PY'
import json, os, sys
out, rows = sys.argv[1], sys.argv[2:]
print("| row | test accuracy after epoch 1 / 2 / 3 | macro-F1 (last) | seconds |")
print("|---|---|---|---|")
for row in rows:
    evals = [json.loads(l) for l in open(f"{out}/{row}/metrics.jsonl")]
    evals = [e for e in evals if e.get("type") == "eval"]
    secs = open(f"{out}/{row}.seconds").read().strip()
    if row.startswith("tapt"):
        secs = open(f"{out}/tapt-model.seconds").read().strip() + " (TAPT) + " + secs
    accs = " / ".join(f"{100 * e['accuracy']:.1f} %" for e in evals)
    print(f"| {row} | {accs} | {evals[-1].get('macro_f1', float('nan')):.3f} | {secs} |")
PY
