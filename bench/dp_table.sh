#!/usr/bin/env bash
# DP-SGD's cost in accuracy, step time and memory: the shipped model, q4 base and embeddings, LoRA
# on every linear layer of the encoder, the demo's settings (batch 32, 64 tokens, lr 2e-3, 10%
# warmup, 32 MiB budget), trained without DP and at epsilon 8, 3 and 1 (delta = 1 / N, N the
# training rows; the noise multiplier found for the run's steps), on
#   sst2   SST-2's training split (60,614 rows of train.tsv), evaluated on GLUE's validation split
#          (glue-validation.tsv, 872 rows);
#   demo   the demo's review sentences (scripts/fetch_sentiment.sh, 3,000 rows), 20% held out
#          (seed 42).
# ROWS > 0 trains on the first ROWS rows of each file only (before the demo's hold-out). SST-2 runs
# EPOCHS epochs (default 1), the demo data the demo's 8.
# Prints one Markdown table: accuracy of the last evaluation, median seconds per optimizer step
# (between progress lines 10 steps apart), the accountant's peak and the process's VmHWM.
#   bench/dp_table.sh [SHARED_DATA_DIR] [OUT] [ROWS] [EPOCHS] [THREADS]
# EDGETUNE=binary runs another build.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${1:-../shared/data}"
out="${2:-runs/dp-table}"
rows="${3:-0}"
epochs="${4:-1}"
threads="${5:-0}"
edgetune="${EDGETUNE:-build/release/examples/edgetune}"
[ -x "$edgetune" ] || { echo "dp_table: build $edgetune first (cmake --build build/release --target edgetune)" >&2; exit 1; }
mkdir -p "$out"

scripts/fetch_sentiment.sh
first_rows() {  # first_rows FILE: its header and its first $rows rows (all with rows 0)
  if [ "$rows" -gt 0 ]; then head -n $((rows + 1)) "$1"; else cat "$1"; fi
}
first_rows "$shared/sst2/train.tsv" >"$out/sst2-train.tsv"
first_rows .cache/sentiment/sentiment.tsv >"$out/demo-train.tsv"

run() {  # run NAME DATA_ARGS... -- DP_ARGS...
  local name=$1; shift
  local args=()
  while [ "$1" != "--" ]; do args+=("$1"); shift; done
  shift
  rm -rf "$out/$name"
  "$edgetune" train --model models/edgetune-mini-uncased "${args[@]}" --seed 42 \
    --quant q4 --quant-embeddings --method lora \
    --lora-targets query,key,value,attention.output,intermediate,output --memory-budget 32M \
    --batch-size 32 --max-length 64 --lr 2e-3 --warmup-ratio 0.1 --log-every 10 \
    --threads "$threads" --out "$out/$name" "$@" >"$out/$name.log" 2>&1
}

names=()
for data in demo sst2; do
  if [ "$data" = sst2 ]; then
    data_args=(--train "$out/sst2-train.tsv" --eval "$shared/sst2/glue-validation.tsv" --epochs "$epochs")
  else
    data_args=(--train "$out/demo-train.tsv" --eval-split 0.2 --epochs 8)
  fi
  run "$data-nodp" "${data_args[@]}" --
  names+=("$data-nodp")
  for eps in 8 3 1; do
    run "$data-eps$eps" "${data_args[@]}" -- --dp-target-epsilon "$eps"
    names+=("$data-eps$eps")
  done
done

/usr/bin/python3 - "$out" "${names[@]}" <<'PY'
import json, sys
out, names = sys.argv[1], sys.argv[2:]
print("| data | privacy | noise multiplier | steps | accuracy | s / step | accountant peak | VmHWM |")
print("|---|---|---|---|---|---|---|---|")
for name in names:
    lines = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")]
    train = [l for l in lines if l["type"] == "train"]
    evals = [l for l in lines if l["type"] == "eval"]
    per_step = sorted((b["seconds"] - a["seconds"]) / (b["step"] - a["step"]) for a, b in zip(train, train[1:]))
    median = per_step[len(per_step) // 2] if per_step else train[-1]["seconds"] / train[-1]["step"]
    noise = "-"
    for l in open(f"{out}/{name}.log"):
        if l.startswith("DP-SGD:"):
            noise = l.split("noise multiplier ")[1].split(",")[0]
    data, _, kind = name.partition("-")
    privacy = "none" if kind == "nodp" else f"epsilon {evals[-1]['epsilon']:.3g}, delta 1/N"
    mib = lambda b: f"{b / 2**20:.1f} MiB"
    print(f"| {data} | {privacy} | {noise} | {train[-1]['step']} | {evals[-1]['accuracy']:.4f} | {median:.3f} "
          f"| {mib(max(l['memory_peak'] for l in train))} | {mib(max(l['peak_rss'] for l in train))} |")
PY
