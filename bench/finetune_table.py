#!/usr/bin/env python3
"""Fine-tunes one model with every method x base storage on the shared data sets and prints a
table: accuracy, macro-F1, accountant peak, peak RSS (VmHWM) and wall time per run, with the exact
command of each run.

  bench/finetune_table.py --model DIR [--data ../shared/data] [--out runs/table] [--quick]

SMS Spam: a seeded 80/20 split of the collection (no header: label column 0, text column 1).
SST-2: trained on train.tsv (capped by --sst2-steps optimizer steps), evaluated on
glue-validation.tsv. Runs one after another (each run is its own process, so its VmHWM is its own).
Needs only the built `edgetune` binary (build/release/examples/edgetune).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EDGETUNE = os.path.join(HERE, "..", "build", "release", "examples", "edgetune")


def run(cmd):
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.time() - t
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return p.stderr, dt


def parse(stderr):
    peak = re.search(r"peak memory: accountant ([\d.]+ \w+), process \(VmHWM\) ([\d.]+ \w+)", stderr)
    ev = re.search(r"accuracy ([\d.]+), macro-F1 ([\d.]+)", stderr)
    return (float(ev.group(1)), float(ev.group(2)), peak.group(1), peak.group(2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data"))
    ap.add_argument("--out", default="runs/table")
    ap.add_argument("--methods", default="lora,adapter,bitfit,head,full")
    ap.add_argument("--quants", default="f32,q8,q4")
    ap.add_argument("--datasets", default="sms_spam,sst2")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--sst2-steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default="finetune-table.json")
    a = ap.parse_args()
    rows = []
    for ds in a.datasets.split(","):
        for method in a.methods.split(","):
            for quant in a.quants.split(","):
                if method == "full" and quant != "f32":
                    continue  # full fine-tuning trains a float32 base
                out = os.path.join(a.out, f"{ds}-{method}-{quant}")
                cmd = [EDGETUNE, "train", "--model", a.model, "--method", method, "--quant", quant,
                       "--out", out, "--seed", "42", "--threads", str(a.threads), "--log-every", "100"]
                if ds == "sms_spam":
                    cmd += ["--train", os.path.join(a.data, "sms_spam", "SMSSpamCollection"),
                            "--label-column", "0", "--text-column", "1", "--header", "absent",
                            "--eval-split", "0.2", "--epochs", str(a.epochs), "--batch-size", "16",
                            "--max-length", "64"]
                else:
                    cmd += ["--train", os.path.join(a.data, "sst2", "train.tsv"),
                            "--eval", os.path.join(a.data, "sst2", "glue-validation.tsv"),
                            "--epochs", "1", "--max-steps", str(a.sst2_steps), "--batch-size", "32",
                            "--max-length", "64"]
                stderr, dt = run(cmd)
                acc, f1, peak, rss = parse(stderr)
                row = {"dataset": ds, "method": method, "quant": quant, "accuracy": acc,
                       "macro_f1": f1, "accountant_peak": peak, "peak_rss": rss, "seconds": round(dt, 1),
                       "command": " ".join(cmd)}
                rows.append(row)
                print(f"{ds:9} {method:8} {quant:4} acc {acc:.4f} F1 {f1:.4f} peak {peak:>10} "
                      f"VmHWM {rss:>10} {dt:7.1f} s", flush=True)
    with open(a.json, "w") as f:
        json.dump(rows, f, indent=2)
    print("\n| data | method | base | accuracy | macro-F1 | accountant peak | VmHWM | time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['method']} | {r['quant']} | {r['accuracy']:.4f} | "
              f"{r['macro_f1']:.4f} | {r['accountant_peak']} | {r['peak_rss']} | {r['seconds']} |")


if __name__ == "__main__":
    main()
