#!/usr/bin/env bash
# Continual updates with and without replay: the shipped model, q4 base + LoRA, trained on domain
# A (SST-2 movie sentences), then 5 successive updates of 100 rows each from domain B (the Yelp
# and Amazon reviews of scripts/fetch_sentiment.sh: the demo's product and restaurant reviews).
# After each update it evaluates on A's validation set (sst2/glue-validation.tsv) and on B's
# held-out rows, for four strategies: no replay (--replay-ratio 0), replay (the defaults), replay
# with a small learning rate (--lr 5e-5), and one full retraining on A + all 500 B rows (the upper
# bound, after the fifth update only). Prints one table row per evaluation (strategy, update,
# accuracy on A, accuracy on B, wall seconds of the update) and the commands; runs go to OUT.
#
# A is a seeded subset of SST-2's training rows (A_ROWS, default 10000 of 67,349: one whole epoch
# on two shared cores takes too long for this table); B's 2,000 review rows are shuffled (seed 7)
# into 500 update rows (5 x 100) and 1,500 held out, of which the first B_EVAL (default 500) are
# evaluated. A_LR (default 1e-3) is the learning rate of the runs on A and on A + B.
#   bench/continual_table.sh [SHARED_DATA_DIR] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data}/sst2"
out="${2:-runs/continual}"
a_rows="${A_ROWS:-10000}"
b_eval="${B_EVAL:-500}"
E="${EDGETUNE:-build/release/examples/edgetune}"
M=models/edgetune-mini-uncased
model=(--model "$M" --quant q4)
mkdir -p "$out"

scripts/fetch_sentiment.sh
OUT="$out" A_ROWS="$a_rows" B_EVAL="$b_eval" SST2="$data" /usr/bin/python3 - <<'PY'
import os, random
out, sst2 = os.environ["OUT"], os.environ["SST2"]
a_rows, b_eval = int(os.environ["A_ROWS"]), int(os.environ["B_EVAL"])
with open(os.path.join(sst2, "train.tsv")) as f:
    header, *rows = f.read().splitlines()
random.Random(42).shuffle(rows)
with open(os.path.join(out, "a_train.tsv"), "w") as f:
    f.write("\n".join([header] + rows[:a_rows]) + "\n")
with open(".cache/sentiment/sentiment.tsv") as f:
    header_b, *reviews = f.read().splitlines()
reviews = reviews[1000:]  # imdb first (movies, domain A's), then yelp and amazon
random.Random(7).shuffle(reviews)
for k in range(5):
    with open(os.path.join(out, f"b_update{k + 1}.tsv"), "w") as f:
        f.write("\n".join([header_b] + reviews[100 * k:100 * (k + 1)]) + "\n")
with open(os.path.join(out, "b_heldout.tsv"), "w") as f:
    f.write("\n".join([header_b] + reviews[500:500 + b_eval]) + "\n")
with open(os.path.join(out, "ab_train.tsv"), "w") as f:
    f.write("\n".join([header] + rows[:a_rows] + reviews[:500]) + "\n")
PY

train=(--epochs 1 --batch-size 32 --max-length 64 --warmup-ratio 0.06 --seed 42 --threads 2 --log-every 100
       --method lora --lora-targets query,key,value,attention.output,intermediate,output --lr "${A_LR:-1e-3}")
accuracy() {  # RUN FILE -> accuracy
  "$E" eval "${model[@]}" --adapter "$1" --data "$2" --max-length 64 --threads 2 --json |
    /usr/bin/python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["accuracy"])'
}
row() {  # STRATEGY UPDATE RUN SECONDS
  printf '| %-16s | %6s | %8s | %8s | %7s |\n' "$1" "$2" "$(accuracy "$3" "$data/glue-validation.tsv")" \
    "$(accuracy "$3" "$out/b_heldout.tsv")" "$4"
}

if [ ! -f "$out/a/adapter_model.safetensors" ]; then
  echo "\$ $E train ${model[*]} --train $out/a_train.tsv --out $out/a ${train[*]}"
  "$E" train "${model[@]}" --train "$out/a_train.tsv" --out "$out/a" "${train[@]}" 2>&1 | tail -1
fi
printf '| %-16s | %6s | %8s | %8s | %7s |\n' strategy update "acc A" "acc B" "seconds"
printf '|%s|\n' "------------------|--------|----------|----------|---------"
row "A only" 0 "$out/a" -
for strategy in no-replay replay replay-small-lr; do
  case $strategy in
    no-replay) opts=(--replay-ratio 0) ;;
    replay) opts=() ;;
    replay-small-lr) opts=(--lr 5e-5) ;;
  esac
  run="$out/$strategy"
  rm -rf "$run"
  cp -r "$out/a" "$run"
  for k in 1 2 3 4 5; do
    start=$(date +%s.%N)
    "$E" update --run "$run" --train "$out/b_update$k.tsv" --threads 2 "${opts[@]}" >"$run.log$k" 2>&1
    seconds=$(/usr/bin/python3 -c "print('%.1f' % ($(date +%s.%N) - $start))")
    row "$strategy" "$k" "$run" "$seconds"
  done
  echo "  (\$ $E update --run RUN --train $out/b_updateK.tsv --threads 2 ${opts[*]})"
done
start=$(date +%s.%N)
"$E" train "${model[@]}" --train "$out/ab_train.tsv" --out "$out/retrain" "${train[@]}" >"$out/retrain.log" 2>&1
seconds=$(/usr/bin/python3 -c "print('%.1f' % ($(date +%s.%N) - $start))")
row "retrain A+B" 5 "$out/retrain" "$seconds"
