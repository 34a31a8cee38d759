#!/usr/bin/env bash
# Pretraining objectives at equal compute: the shipped model's shape and vocabulary, from the same
# random initialisation (create-model --seed 0), pretrained on the shipped model's first corpus
# (scripts/fetch_corpus.sh: sotu, moby-dick, brown) three ways:
#   mlm       masked-LM, piece by piece, STEPS steps
#   wwm       masked-LM with whole-word masking (--whole-word-masking), STEPS steps
#   electra   replaced-token detection (--objective electra, a 1-layer generator), as many steps as
#             cost what STEPS masked-LM steps cost: STEPS times the ratio of the multiply-adds of
#             a masked-LM step to an ELECTRA step for this shape (printed; about 1 : 1.19)
# Same data, order, learning-rate schedule (2e-3, 6 % warmup, linear decay to 0 at the last step)
# and masked-token rate. Then each is fine-tuned
# as the TAPT and DP tables' SST-2 rows (the first ROWS rows of train.tsv, q4 base and embeddings,
# LoRA on every linear layer, batch 32, 64 tokens, lr 2e-3, 10 % warmup, one epoch) and evaluated
# on glue-validation.tsv.
# Held-out loss is masked piece by piece for both masked-LM runs (pretrain.h), which favours the run
# trained that way; ELECTRA's discriminator has no masked-LM loss at all. The fine-tuning accuracy
# is the comparison that takes no side.
# Prints a Markdown table and draws the pretraining runs into OUT/objectives.svg.
# Two settings in the environment change the start and the text:
#   START=DIR     continue a pretrained model (e.g. models/edgetune-mini-uncased) instead of
#                 starting from the random initialisation; the fine-tuning row of DIR itself is
#                 printed too
#   CORPUS="..."  the corpus files' names in .cache/corpus (default: sotu moby-dick brown)
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
corpus_files=()
for name in ${CORPUS:-sotu moby-dick brown}; do corpus_files+=("$corpus/$name.txt"); done
if [ -n "${START:-}" ]; then
  init="$START"
else
  init="$out/init"
  "$cli" create-model --vocab models/edgetune-mini-uncased/vocab.txt --out "$init" \
    --layers 4 --hidden 192 --heads 4 --intermediate 768 --max-positions 128 --seed 0 >/dev/null
fi
finetune() {  # MODEL RUN: the SST-2 row
  "$cli" train --model "$1" --train "$out/train.tsv" --eval "$data/glue-validation.tsv" --seed 42 \
    --quant q4 --quant-embeddings --method lora \
    --lora-targets query,key,value,attention.output,intermediate,output --epochs 1 --batch-size 32 \
    --max-length 64 --lr 2e-3 --warmup-ratio 0.1 --threads "$threads" --out "$out/$2" >"$out/$2.log" 2>&1
}
[ -n "${START:-}" ] && finetune "$init" start-sst2

# Multiply-adds per token of a step's forward (the backward costs twice that for both): an encoder
# layer 4C^2 + 2CF + 2TC; the masked-LM head C^2 + CV at the masked 15 %; ELECTRA's detection head
# C^2 + C at every token; its generator one layer with the masked-LM head.
electra_steps=$(/usr/bin/python3 - "$init/config.json" "$steps" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
C, F, V, L, T = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"], 128
layer = 4 * C * C + 2 * C * F + 2 * T * C
mlm_head = 0.15 * (C * C + C * V)
mlm = L * layer + mlm_head
electra = layer + mlm_head + L * layer + C * C + C
print(round(int(sys.argv[2]) * mlm / electra))
PY
)
echo "objective_table: ELECTRA gets $electra_steps steps for the masked-LM runs' $steps" >&2
for objective in mlm wwm electra; do
  flag=()
  n="$steps"
  [ "$objective" = wwm ] && flag=(--whole-word-masking)
  [ "$objective" = electra ] && flag=(--objective electra --generator-layers 1) && n="$electra_steps"
  start=$(date +%s.%N)
  "$cli" pretrain --model "$init" --corpus "${corpus_files[@]}" \
    --out "$out/$objective" --max-length 128 --batch-size 32 --lr 2e-3 --adam-beta2 0.98 \
    --warmup-ratio 0.06 --max-steps "$n" --dropout 0 --seed 42 --threads "$threads" \
    --eval-every 100 --log-every 50 "${flag[@]}" >"$out/$objective.log" 2>&1
  echo "$(date +%s.%N) - $start" | bc >"$out/$objective.seconds"
  finetune "$out/$objective" "$objective-sst2"
done
"$cli" plot "$out/mlm" "$out/wwm" "$out/electra" --out "$out/objectives.svg" >/dev/null

/usr/bin/python3 - "$out" "$steps" "$rows" <<'PY'
import json, sys
out, steps, rows = sys.argv[1:]
def metrics(run):
    return [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")]
print(f"| objective | steps | tokens | seconds | held-out loss / accuracy | SST-2 accuracy ({rows} rows, q4 + LoRA) |")
print("|---|---|---|---|---|---|")
import os
if os.path.exists(f"{out}/start-sst2/metrics.jsonl"):
    acc = [l for l in metrics("start-sst2") if l.get("type") == "eval"][-1]["accuracy"]
    print(f"| the starting model, not pretrained further | 0 | 0 | 0 | - | {acc:.4f} |")
for name, label in (("mlm", "masked pieces"), ("wwm", "whole-word masking"), ("electra", "ELECTRA (1-layer generator)")):
    m = metrics(name)
    ev = [l for l in m if l.get("type") == "eval"][-1]
    train = [l for l in m if l.get("type") == "train"][-1]
    tokens = train.get("tokens_seen", "-")
    acc = [l for l in metrics(name + "-sst2") if l.get("type") == "eval"][-1]["accuracy"]
    secs = float(open(f"{out}/{name}.seconds").read())
    if "rtd_loss" in ev:
        held = (f"detection {ev['rtd_loss']:.3f} / {ev['rtd_accuracy']:.3f}; "
                f"generator MLM {ev['generator_mlm_loss']:.3f} / {ev['generator_mlm_accuracy']:.3f}")
    else:
        held = f"MLM {ev['mlm_loss']:.3f} / {ev['mlm_accuracy']:.3f}"
    print(f"| {label} | {train['step']} | {tokens} | {secs:.0f} | {held} | {acc:.4f} |")
PY
