#!/usr/bin/env bash
# Federated averaging against centralized training on SST-2, with the shipped model, q4 base and
# LoRA: the first ROWS rows of train.tsv (default all) split among K = 4 and 8 clients by a
# Dirichlet(0.5) label split, ROUNDS rounds in which each client takes TOTAL_STEPS / (K x ROUNDS)
# local steps, so both fleets take TOTAL_STEPS optimizer steps in all, evaluated on
# glue-validation.tsv (872 rows) after every round; then one centralized run on the same ROWS rows
# for the same TOTAL_STEPS (batch and learning rate alike). Prints a Markdown table: accuracy per
# round, bytes per round and wall time (measured on whatever else the cores run).
#   bench/federated_table.sh SST2_DIR [OUT] [ROWS] [ROUNDS] [TOTAL_STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: bench/federated_table.sh SST2_DIR [OUT] [ROWS] [ROUNDS] [TOTAL_STEPS]}"
out="${2:-runs/federated-table}"
rows="${3:-all}"
rounds="${4:-10}"
total_steps="${5:-2000}"
cli="${EDGETUNE:-build/release/examples/edgetune}"
model=models/edgetune-mini-uncased
common=(--quant q4 --method lora --batch-size 32 --max-length 64 --lr 1e-3 --lora-targets query,key,value,attention.output,intermediate,output --threads 1 --seed 42)
mpirun_flags=(--oversubscribe)
[ "$(id -u)" = 0 ] && mpirun_flags+=(--allow-run-as-root)

rm -rf "$out"
mkdir -p "$out"
if [ "$rows" = all ]; then cp "$data/train.tsv" "$out/train.tsv"; else head -n $((rows + 1)) "$data/train.tsv" > "$out/train.tsv"; fi

echo "| run | accuracy per round (round 0 first) | bytes per round | wall time |"
echo "|---|---|---|---|"
for k in 4 8; do
  local_steps=$((total_steps / (k * rounds)))
  "$cli" split --data "$out/train.tsv" --clients "$k" --dirichlet 0.5 --seed 42 --out "$out/shards-$k" >/dev/null
  start=$(date +%s.%N)
  mpirun "${mpirun_flags[@]}" -n $((k + 1)) "$cli" federated --model "$model" --shards "$out/shards-$k" \
    --eval "$data/glue-validation.tsv" --rounds "$rounds" --local-steps "$local_steps" --out "$out/fed-$k" "${common[@]}" \
    2>"$out/fed-$k.log"
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  python3 - "$out/fed-$k/metrics.jsonl" "FedAvg K=$k" "$wall" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
acc = " / ".join("%.3f" % l["accuracy"] for l in lines)
print("| %s | %s | %d | %.0f s |" % (sys.argv[2], acc, lines[-1]["bytes"], float(sys.argv[3])))
EOF
done
# One centralized run: both fleets take TOTAL_STEPS steps in all.
start=$(date +%s.%N)
"$cli" train --model "$model" --train "$out/train.tsv" --out "$out/central" --max-steps "$total_steps" \
  --schedule constant "${common[@]}" 2>"$out/central.log"
wall=$(echo "$(date +%s.%N) - $start" | bc)
acc=$("$cli" eval --model "$model" --adapter "$out/central" --data "$data/glue-validation.tsv" --quant q4 --max-length 64 --json \
      | python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["accuracy"])')
echo "| centralized, $total_steps steps | $acc (end) | 0 | ${wall%.*} s |"
