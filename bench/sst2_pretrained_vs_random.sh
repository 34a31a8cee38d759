#!/usr/bin/env bash
# SST-2 accuracy of the shipped pretrained model beside the same shape from random initialisation
# (the weights its pretraining started from: `create-model --seed 0`, see the model card), for
# q4 + LoRA under a 64 MiB budget, f32 + LoRA, and full fine-tuning. Trains on sst2/train.tsv
# and evaluates on sst2/glue-validation.tsv, one epoch each; six runs of about four minutes on two
# cores. Prints each run's command, plan, accuracy and peak memory; the run folders go to OUT.
#   bench/sst2_pretrained_vs_random.sh [SHARED_DATA_DIR] [OUT]
# The environment can narrow it: MODEL (another pretrained folder), INITS ("pretrained random"),
# CONFIGS ("q4-lora f32-lora full"), THREADS (2), SEED (42), FULL_LR (full fine-tuning's learning
# rate, 1e-4) and LORA_RANK (8; alpha is twice the rank, so alpha / r stays 2 as at r 8, alpha 16).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data}/sst2"
out="${2:-runs/sst2}"
E=build/release/examples/edgetune
P="${MODEL:-models/edgetune-mini-uncased}"
R="$out/random-init"
mkdir -p "$out"
if [ ! -f "$R/model.safetensors" ]; then
  $E create-model --vocab $P/vocab.txt --out "$R" --layers 4 --hidden 192 --heads 4 \
    --intermediate 768 --max-positions 128 --seed 0
fi
common=(--train "$data/train.tsv" --eval "$data/glue-validation.tsv" --epochs 1 --batch-size 32
        --max-length 64 --warmup-ratio 0.06 --seed "${SEED:-42}" --threads "${THREADS:-2}" --log-every 500)
rank="${LORA_RANK:-8}"
lora=(--method lora --lora-targets query,key,value,attention.output,intermediate,output --lr 1e-3
      --lora-rank "$rank" --lora-alpha $((2 * rank)))
for init in ${INITS:-pretrained random}; do
  m=$P
  if [ $init = random ]; then m=$R; fi
  for cfg in ${CONFIGS:-q4-lora f32-lora full}; do
    case $cfg in
      q4-lora) a=(--quant q4 "${lora[@]}" --memory-budget 64M) ;;
      f32-lora) a=(--quant f32 "${lora[@]}") ;;
      full) a=(--method full --lr "${FULL_LR:-1e-4}") ;;
    esac
    run="$out/$init-$cfg"
    rm -rf "$run"
    echo "== $init $cfg: $E train --model $m ${common[*]} ${a[*]} --out $run"
    $E train --model "$m" "${common[@]}" "${a[@]}" --out "$run" 2> "$run.log"
    grep -E '^plan:|^done:|evaluation of the kept' "$run.log"
  done
done
