#!/usr/bin/env bash
# Why FedAvg stalls on SST-2's Dirichlet(0.5) split, row by row: the same model, data and settings
# as bench/federated_table.sh (shipped model, q4 base, LoRA on the six linear modules, batch 32,
# 64 tokens, seed 42, 1 thread per rank, accuracy on glue-validation.tsv after every round), K = 4
# clients, each row changing one thing:
#   iid        the split made near-IID (Dirichlet 1000): is the round itself sound?
#   rounds30   30 rounds of 5 local steps instead of 5 of 30 (the same 600 steps in all)
#   fedavgm    10 rounds of 15 local steps, the server with momentum 0.9 (--server-momentum)
#   local-sgd  10 rounds of 15 local steps, the clients with plain SGD at lr 0.1 instead of AdamW
# Prints a Markdown table: accuracy and evaluation loss per round, bytes per round, wall time.
#   bench/federated_variants.sh SST2_DIR [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: bench/federated_variants.sh SST2_DIR [OUT]}"
out="${2:-runs/federated-variants}"
cli="${EDGETUNE:-build/release/examples/edgetune}"
model=models/edgetune-mini-uncased
common=(--quant q4 --method lora --batch-size 32 --max-length 64 --lora-targets query,key,value,attention.output,intermediate,output --threads 1 --seed 42)
mpirun_flags=(--oversubscribe)
[ "$(id -u)" = 0 ] && mpirun_flags+=(--allow-run-as-root)

rm -rf "$out"
mkdir -p "$out"
"$cli" split --data "$data/train.tsv" --clients 4 --dirichlet 0.5 --seed 42 --out "$out/shards" >/dev/null
"$cli" split --data "$data/train.tsv" --clients 4 --dirichlet 1000 --seed 42 --out "$out/shards-iid" >/dev/null

echo "| row | accuracy per round (round 0 first) | evaluation loss, first / last round | bytes per round | wall time |"
echo "|---|---|---|---|---|"
row() {  # row NAME SHARDS FEDERATED_ARGS...
  local name=$1 shards=$2
  shift 2
  local start
  start=$(date +%s.%N)
  mpirun "${mpirun_flags[@]}" -n 5 "$cli" federated --model "$model" --shards "$shards" \
    --eval "$data/glue-validation.tsv" --out "$out/$name" "${common[@]}" "$@" 2>"$out/$name.log"
  python3 - "$out/$name/metrics.jsonl" "$name" "$(echo "$(date +%s.%N) - $start" | bc)" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
acc = " / ".join("%.3f" % l["accuracy"] for l in lines)
print("| %s | %s | %.3f / %.3f | %d | %.0f s |" % (sys.argv[2], acc, lines[1]["loss"], lines[-1]["loss"],
                                              lines[-1]["bytes"], float(sys.argv[3])))
PY
}
row iid "$out/shards-iid" --rounds 5 --local-steps 30 --lr 1e-3
row rounds30 "$out/shards" --rounds 30 --local-steps 5 --lr 1e-3
row fedavgm "$out/shards" --rounds 10 --local-steps 15 --lr 1e-3 --server-momentum 0.9
row local-sgd "$out/shards" --rounds 10 --local-steps 15 --lr 0.1 --optimizer sgd --momentum 0
