#!/usr/bin/env python3
"""What each compression of a model costs: for every row, `edgetune compress` writes a model file,
and the table gives its size, its load time, the planner's peak and the process's VmHWM for q4 +
LoRA training at batch 32 x 64, the step time, and the accuracy after LoRA fine-tuning on SST-2
and SMS spam, each beside the uncompressed (f32) row and the q4 row.

  bench/compress_table.py [--data ../shared/data] [--out runs/compress-table] [--threads 1]
                          [--rows f32,q8,q4,...] [--combo NAME=OPTIONS ...] [--report]

Rows (each a file from `edgetune compress --model MODEL --quant ...`; the structured rows are q4):
  f32, q8, q4, nf4, pal4   the storage of the encoder and pooler weights
  keep3                    --keep-layers 3 (the first three of four layers)
  heads25                  --prune-heads 0.25 --calibration CAL (Michel et al. importance)
  ffn30                    --prune-ffn 0.3 --calibration CAL
  vocab                    --vocab-from TRAIN (the vocabulary of the data set's training rows)
  --combo NAME=OPTIONS     any other set of compress options, e.g.
                           'best=--quant q4 --prune-ffn 0.3 --calibration {cal} --vocab-from {train}'
A row whose options name {cal} or {train} is compressed once per data set, from that set's
calibration or training rows; the others once.

Data: SST-2 trains one epoch on sst2/train.tsv (60,614 rows; --sst2-rows N: its first N rows) and
is evaluated on glue-validation.tsv (872); its calibration rows are the first 256 of sst2/dev.tsv
(GLUE training phrases that train.tsv does not hold). SMS spam is split once, seeded (shuf with a
source of repeated 42): 20 % (1,114 rows) held out for evaluation, the rest trained for
--sms-epochs epochs (3); its calibration rows are the first 256 training rows.
Fine-tuning: LoRA on all six linear modules, batch 32, 64 tokens, lr 1e-3 (--lr), 10 % warmup,
seed 42 (--seed: another, to see how much of a difference between rows one seed's luck explains).
At lr 2e-3 (the demo's) a whole SST-2 epoch is a gamble on this model: of the q4, f32 and
pruned-FFN rows, two stayed at the majority class while q4 reached 72 %.
The file's storage is used as it is (no --quant at training).

Each row's figures are kept in OUT/rows/NAME.json, so rows can be run in several invocations and
`--report` prints the table from all of them. Each run is its own process, so its VmHWM is its own.
Needs only the built `edgetune` binary (EDGETUNE, default build/release/examples/edgetune).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
EDGETUNE = os.environ.get("EDGETUNE", os.path.join(ROOT, "build", "release", "examples", "edgetune"))
MODEL = os.path.join(ROOT, "models", "edgetune-mini-uncased")
LORA = ["--method", "lora", "--lora-targets", "query,key,value,attention.output,intermediate,output",
        "--batch-size", "32", "--max-length", "64", "--warmup-ratio", "0.1"]

ROWS = {
    "f32": "--quant f32",
    "q8": "--quant q8",
    "q4": "--quant q4",
    "nf4": "--quant nf4",
    "pal4": "--quant pal4",
    "keep3": "--quant q4 --keep-layers 3",
    "heads25": "--quant q4 --prune-heads 0.25 --calibration {cal}",
    "ffn30": "--quant q4 --prune-ffn 0.3 --calibration {cal}",
    "vocab": "--quant q4 --vocab-from {train}",
}


def run(cmd, log):
    t = time.time()
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.stderr.write(open(log).read()[-2000:])
        raise SystemExit(f"failed ({log}): {' '.join(cmd)}")
    return time.time() - t


def prepare(data, out, sst2_rows, sms_epochs):
    """The data sets' files: {name: {"train", "eval", "cal", "epochs"}}."""
    d = os.path.join(out, "data")
    os.makedirs(d, exist_ok=True)
    sst2 = os.path.join(data, "sst2")
    sst2_train = os.path.join(sst2, "train.tsv")
    if sst2_rows:
        sst2_train = os.path.join(d, f"sst2-train-{sst2_rows}.tsv")
        if not os.path.exists(sst2_train):
            with open(os.path.join(sst2, "train.tsv")) as f:
                lines = f.readlines()
            with open(sst2_train, "w") as f:
                f.writelines(lines[:sst2_rows + 1])
    cal = os.path.join(d, "sst2-cal.tsv")
    if not os.path.exists(cal):
        with open(os.path.join(sst2, "dev.tsv")) as f:
            lines = f.readlines()
        with open(cal, "w") as f:
            f.writelines(lines[:257])
    sms = os.path.join(d, "sms-train.tsv")
    if not os.path.exists(sms):
        shuffled = subprocess.run(
            ["bash", "-c", 'shuf --random-source=<(yes 42) "$0"', os.path.join(data, "sms_spam", "SMSSpamCollection")],
            capture_output=True, text=True, check=True).stdout.splitlines(keepends=True)
        held = len(shuffled) // 5
        for name, part in (("sms-eval.tsv", shuffled[:held]), ("sms-train.tsv", shuffled[held:]),
                           ("sms-cal.tsv", shuffled[held:held + 256])):
            with open(os.path.join(d, name), "w") as f:
                f.write("label\ttext\n")
                f.writelines(part)
    return {
        "sst2": {"train": sst2_train, "eval": os.path.join(sst2, "glue-validation.tsv"),
                 "cal": cal, "epochs": "1"},
        "sms": {"train": sms, "eval": os.path.join(d, "sms-eval.tsv"), "cal": os.path.join(d, "sms-cal.tsv"),
                "epochs": str(sms_epochs)},
    }


def load_seconds(model_file):
    best = None
    for _ in range(3):
        t = time.time()
        subprocess.run([EDGETUNE, "inspect", "--model", model_file], capture_output=True, check=True)
        dt = time.time() - t
        best = dt if best is None else min(best, dt)
    return best


def train(model_file, ds, run_dir, threads, seed, lr):
    cmd = [EDGETUNE, "train", "--model", model_file, "--train", ds["train"], "--eval", ds["eval"],
           "--epochs", ds["epochs"], "--threads", str(threads), "--log-every", "50", "--seed", str(seed),
           "--lr", str(lr), "--out", run_dir] + LORA
    if os.path.exists(run_dir):
        subprocess.run(["rm", "-rf", run_dir], check=True)
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)
    log = run_dir + ".log"
    wall = run(cmd, log)
    text = open(log).read()
    plan = re.search(r"estimated peak ([\d.]+) MiB", text)
    done = re.findall(r"done: (\d+) steps in ([\d.]+) s.*accountant ([\d.]+) MiB, process \(VmHWM\) ([\d.]+) MiB", text)[-1]
    evals = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if '"type":"eval"' in l]
    return {"command": " ".join(cmd), "planner_peak_mib": float(plan.group(1)), "steps": int(done[0]),
            "train_seconds": float(done[1]), "step_seconds": float(done[1]) / int(done[0]),
            "accountant_peak_mib": float(done[2]), "vmhwm_mib": float(done[3]),
            "accuracy": evals[-1]["accuracy"], "macro_f1": evals[-1]["macro_f1"], "wall_seconds": wall}


def do_row(name, options, sets, out, threads, seed, lr):
    per_set = "{cal}" in options or "{train}" in options
    row = {"row": name, "options": options, "files": {}, "sets": {}}
    files = os.path.join(out, "files")
    os.makedirs(files, exist_ok=True)
    for set_name, ds in sets.items():
        f = os.path.join(files, f"{name}-{set_name}.safetensors" if per_set else f"{name}.safetensors")
        if not os.path.exists(f):
            opts = options.format(cal=ds["cal"], train=ds["train"]).split()
            cmd = [EDGETUNE, "compress", "--model", MODEL, "--out", f] + opts
            secs = run(cmd, f + ".log")
            row["files"][set_name] = {"compress_command": " ".join(cmd), "compress_seconds": secs}
        info = json.loads(subprocess.run([EDGETUNE, "inspect", "--model", f, "--json"], capture_output=True,
                                         text=True, check=True).stdout)
        row["sets"][set_name] = {"file": f, "bytes": os.path.getsize(f), "load_seconds": load_seconds(f),
                                 "mapped_bytes": info.get("mapped_bytes"),
                                 "vocab_size": info["config"]["vocab_size"]}
        row["sets"][set_name].update(train(f, ds, os.path.join(out, "runs", f"{name}-{set_name}"), threads, seed, lr))
        print(f"{name:10} {set_name:5} {row['sets'][set_name]['bytes'] / 1e6:6.1f} MB "
              f"acc {row['sets'][set_name]['accuracy']:.4f}  {row['sets'][set_name]['step_seconds']:.3f} s/step "
              f"VmHWM {row['sets'][set_name]['vmhwm_mib']} MiB", flush=True)
    os.makedirs(os.path.join(out, "rows"), exist_ok=True)
    with open(os.path.join(out, "rows", name + ".json"), "w") as f:
        json.dump(row, f, indent=2)


def measure(out, rounds, steps, threads):
    """Figures that compare best taken side by side, with one binary: the planner's estimate for
    q4 + LoRA at 32 x 64 (inspect), the load time (inspect without an estimate, the files in turn,
    `rounds` times, the best kept) and the step time (the rows' files in turn, `rounds` times
    `steps` steps each on SST-2's training rows, the median kept). Written into each row's
    JSON (the figures from the fine-tuning runs stay beside them)."""
    rows = {}
    for fn in sorted(os.listdir(os.path.join(out, "rows"))):
        rows[fn] = json.load(open(os.path.join(out, "rows", fn)))
    times = {fn: [] for fn in rows}
    for fn, r in rows.items():
        s = r["sets"]["sst2"]
        info = json.loads(subprocess.run(
            [EDGETUNE, "inspect", "--model", s["file"], "--batch-size", "32", "--max-length", "64",
             "--lora-targets", "query,key,value,attention.output,intermediate,output", "--json"],
            capture_output=True, text=True, check=True).stdout)
        est = info["training_estimate"]
        s["planner_estimate_mib"] = est["bytes"]["total"] / 2**20
        s["planner_mapped_mib"] = est["bytes"]["mapped"] / 2**20
    loads = {(fn, k): [] for fn, r in rows.items() for k in r["sets"]}
    for _ in range(rounds):
        for fn, r in rows.items():
            for k, s in r["sets"].items():
                t = time.time()
                subprocess.run([EDGETUNE, "inspect", "--model", s["file"]], capture_output=True, check=True)
                loads[(fn, k)].append(time.time() - t)
    for (fn, k), v in loads.items():
        rows[fn]["sets"][k]["load_seconds_side_by_side"] = min(v)
    for _ in range(rounds):
        for fn, r in rows.items():
            s = r["sets"]["sst2"]
            run_dir = os.path.join(out, "steptime")
            subprocess.run(["rm", "-rf", run_dir], check=True)
            p = subprocess.run([EDGETUNE, "train", "--model", s["file"], "--train", s["command"].split("--train ")[1].split()[0],
                                "--max-steps", str(steps), "--threads", str(threads), "--log-every", str(steps),
                                "--seed", "42", "--lr", "1e-3", "--out", run_dir] + LORA,
                               capture_output=True, text=True, check=True)
            done = re.search(r"done: (\d+) steps in ([\d.]+) s", p.stderr)
            times[fn].append(float(done.group(2)) / int(done.group(1)))
    for fn, r in rows.items():
        r["sets"]["sst2"]["step_seconds_side_by_side"] = sorted(times[fn])[len(times[fn]) // 2]
        with open(os.path.join(out, "rows", fn), "w") as f:
            json.dump(r, f, indent=2)
        print(f"{r['row']:10} planner {r['sets']['sst2']['planner_estimate_mib']:.1f} MiB "
              f"(mapped {r['sets']['sst2']['planner_mapped_mib']:.1f}) step {r['sets']['sst2']['step_seconds_side_by_side']:.3f} s",
              flush=True)


def report(out):
    rows = {}
    for fn in sorted(os.listdir(os.path.join(out, "rows"))):
        r = json.load(open(os.path.join(out, "rows", fn)))
        rows[r["row"]] = r
    order = [n for n in ROWS if n in rows] + sorted(n for n in rows if n not in ROWS)

    def diff(name, ref, s):
        if ref not in rows or name == ref:
            return "-"
        return f"{100 * (rows[name]['sets'][s]['accuracy'] - rows[ref]['sets'][s]['accuracy']):+.1f}"

    print("| row | compress options | file size (SST-2 / SMS) | load | planner peak | VmHWM | s / step "
          "| SST-2 accuracy | vs f32 | vs q4 | SMS accuracy | vs f32 | vs q4 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in order:
        r = rows[n]
        a, b = r["sets"]["sst2"], r["sets"]["sms"]
        size = f"{a['bytes'] / 1e6:.1f} MB" if a["bytes"] == b["bytes"] else f"{a['bytes'] / 1e6:.1f} / {b['bytes'] / 1e6:.1f} MB"
        opts = r["options"].replace("{cal}", "CAL").replace("{train}", "TRAIN")
        load = a.get("load_seconds_side_by_side", a["load_seconds"])
        plan = a.get("planner_estimate_mib", a["planner_peak_mib"])
        mapped = f" ({a['planner_mapped_mib']:.1f} mapped)" if "planner_mapped_mib" in a else ""
        step = a.get("step_seconds_side_by_side", a["step_seconds"])
        print(f"| {n} | `{opts}` | {size} | {load:.3f} s | {plan:.1f} MiB{mapped} "
              f"| {a['vmhwm_mib']:.1f} MiB | {step:.3f} | {a['accuracy']:.4f} | {diff(n, 'f32', 'sst2')} "
              f"| {diff(n, 'q4', 'sst2')} | {b['accuracy']:.4f} | {diff(n, 'f32', 'sms')} | {diff(n, 'q4', 'sms')} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--out", default="runs/compress-table")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--sst2-rows", type=int, default=0, help="train on the first N rows of train.tsv (0: all)")
    ap.add_argument("--sms-epochs", type=int, default=3)
    ap.add_argument("--sets", default="sst2,sms", help="the data sets to train on")
    ap.add_argument("--seed", type=int, default=42, help="the fine-tuning seed (order, LoRA init)")
    ap.add_argument("--lr", type=float, default=1e-3, help="the fine-tuning learning rate")
    ap.add_argument("--combo", action="append", default=[], help="NAME=compress options")
    ap.add_argument("--report", action="store_true", help="only print the table of the rows already run")
    ap.add_argument("--measure", type=int, nargs=2, metavar=("ROUNDS", "STEPS"),
                    help="for the rows already run: the planner's estimate and step times taken side by side")
    a = ap.parse_args()
    if a.measure:
        measure(a.out, a.measure[0], a.measure[1], a.threads)
        report(a.out)
        return
    if a.report:
        report(a.out)
        return
    if not os.path.isdir(os.path.join(a.data, "sst2")) or not os.path.isdir(os.path.join(a.data, "sms_spam")):
        raise SystemExit(f"compress_table: {a.data} has no sst2/ and sms_spam/ (see ../shared/data/README.md)")
    sets = prepare(a.data, a.out, a.sst2_rows, a.sms_epochs)
    todo = [(n, ROWS[n]) for n in a.rows.split(",") if n]
    for c in a.combo:
        name, _, opts = c.partition("=")
        todo.append((name, opts))
    for name, opts in todo:
        do_row(name, opts, {k: v for k, v in sets.items() if k in a.sets.split(",")}, a.out, a.threads, a.seed, a.lr)
    report(a.out)


if __name__ == "__main__":
    main()
