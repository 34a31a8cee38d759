#!/usr/bin/env python3
"""A cross-built edgetune CLI predicts what the host's CLI predicts, on the shipped model.

usage: predict_parity.py HOST_CLI TARGET_CLI MODEL_DIR [EMULATOR ARG...]

The host CLI fine-tunes a LoRA adapter and the classifier head for a few steps (so predict goes
through the adapter path an app uses), then both CLIs run `predict` with that adapter on the same
sentences, for each base storage (f32; q8; q4 with q4 embeddings) and, for the quantized bases,
both compute paths (f32, the exact float path; int8, the default). TARGET_CLI runs under EMULATOR
(for ARM64: qemu-aarch64 -L /usr/aarch64-linux-gnu ...). Every row must get the same label from
both, unless the host's two most likely labels lie within twice the tolerance (a tie either may
win). On the f32 path every probability must agree within PROB_TOL. On the int8 path within the
int8 budget below. A missing binary or model is a failure. Exit code 0 when all agree, 1 otherwise.
"""
import json
import os
import subprocess
import sys
import tempfile

# Two builds of the same float code for different CPUs differ only in rounding: FMA contraction,
# the order of vectorised sums and libm's exp/tanh. Those move a logit by ~1e-6, far below this.
PROB_TOL = 1e-4
# The int8 path quantizes each activation row to steps of max|row| / 127. Inputs that differ by
# float rounding (as above) can round to neighbouring steps, and that one-step change is an error of
# the same kind as the int8 path's own quantization error, not a float rounding. So on the int8
# path two CPUs must agree within that error: INT8_BUDGET_FACTOR times the largest
# |P(int8) - P(f32)| the host measures for the same base on the same sentences (with PROB_TOL as
# its floor). Factor 1: one CPU's rounding flips cannot move a probability further than the whole
# quantization error moves it.
INT8_BUDGET_FACTOR = 1.0

TRAIN = [
    ("a wonderful, warm and funny film", 1),
    ("the best meal i have had in years", 1),
    ("friendly staff and a lovely room", 1),
    ("i loved every minute of it", 1),
    ("great value, would buy again", 1),
    ("a delight from start to finish", 1),
    ("beautifully shot and well acted", 1),
    ("fast delivery and it works perfectly", 1),
    ("a dull, lifeless and boring film", 0),
    ("the worst service i have ever had", 0),
    ("dirty room and rude staff", 0),
    ("i hated every minute of it", 0),
    ("broke after two days, a waste of money", 0),
    ("a mess from start to finish", 0),
    ("badly written and badly acted", 0),
    ("late delivery and it does not work", 0),
]

PREDICT = [t for t, _ in TRAIN] + [
    "not bad at all, i would go back",
    "it was fine i guess",
    "Absolutely TERRIBLE!!! never again...",
    "Café crème, naïve résumé: ünïcödé text and emoji \U0001F600",
    "中文 文本 and mixed scripts",
    "?",
    "the plot " + "goes on and on " * 12 + "and then it ends",
]


def fail(message):
    print("predict_parity: FAILED: " + message)
    sys.exit(1)


def run(command, what):
    r = subprocess.run(command, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{what} exited {r.returncode}: {' '.join(command)}\n{r.stderr.strip()}")
    return r.stdout


def predictions(output, what):
    rows = [json.loads(line) for line in output.splitlines() if line.strip()]
    if len(rows) != len(PREDICT):
        fail(f"{what}: {len(rows)} rows predicted, expected {len(PREDICT)}")
    return rows


def main():
    if len(sys.argv) < 4:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    host_cli, target_cli, model = sys.argv[1], sys.argv[2], sys.argv[3]
    emulator = sys.argv[4:]
    for path in (host_cli, target_cli):
        if not os.access(path, os.X_OK):
            fail(f"{path} is not built")
    if not os.path.isfile(os.path.join(model, "model.safetensors")):
        fail(f"{model} holds no model.safetensors")

    with tempfile.TemporaryDirectory(prefix="edgetune-predict-parity-") as tmp:
        train_file = os.path.join(tmp, "train.tsv")
        with open(train_file, "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n")
            f.writelines(f"{t}\t{label}\n" for t, label in TRAIN)
        data_file = os.path.join(tmp, "predict.jsonl")
        with open(data_file, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in PREDICT)
        run_dir = os.path.join(tmp, "run")
        run([host_cli, "train", "--model", model, "--train", train_file, "--out", run_dir,
             "--method", "lora", "--quant", "f32", "--epochs", "8", "--batch-size", "8",
             "--lr", "5e-3", "--seed", "7"], "host train")

        worst = {"f32": 0.0, "int8": 0.0}
        int8_budget, rows_checked = 0.0, 0

        def compare(name, host, target, tol, path):
            nonlocal rows_checked
            for i, (h, t) in enumerate(zip(host, target)):
                # A label is the arg-max of probabilities allowed to differ by tol: where the host's
                # two most likely labels lie within 2 * tol of each other, either may win.
                top = sorted(h["probabilities"].values(), reverse=True)
                tie = len(top) > 1 and top[0] - top[1] <= 2 * tol
                if h["label"] != t["label"] and not tie:
                    fail(f"{name}, row {i} ({h['text'][:40]!r}): label {t['label']} on the target, "
                         f"{h['label']} on the host (host probabilities {h['probabilities']})")
                if h["probabilities"].keys() != t["probabilities"].keys():
                    fail(f"{name}, row {i}: label names differ")
                for k, p in h["probabilities"].items():
                    diff = abs(p - t["probabilities"][k])
                    worst[path] = max(worst[path], diff)
                    if diff > tol:
                        fail(f"{name}, row {i} ({h['text'][:40]!r}): P({k}) {t['probabilities'][k]}"
                             f" on the target, {p} on the host (|diff| {diff:.3g} > {tol:.3g})")
                rows_checked += 1
            labels = {row["label"] for row in host}
            print(f"predict {name}: {len(host)} rows, same labels ({len(labels)} distinct), "
                  f"tolerance {tol:.3g}")

        for quant in (["--quant", "f32"], ["--quant", "q8"], ["--quant", "q4", "--quant-embeddings"]):
            # One thread on both: the same order of operations, so only the CPU differs.
            args = ["predict", "--model", model, "--adapter", run_dir, "--data", data_file,
                    "--threads", "1", *quant]
            results = {}
            for compute in (["f32"] if quant[1] == "f32" else ["f32", "int8"]):
                name = " ".join(quant) + " --compute " + compute
                host = predictions(run([host_cli, *args, "--compute", compute],
                                       f"host predict {name}"), f"host {name}")
                target = predictions(run([*emulator, target_cli, *args, "--compute", compute],
                                         f"target predict {name}"), f"target {name}")
                results[compute] = (name, host, target)
            name, host, target = results["f32"]
            compare(name, host, target, PROB_TOL, "f32")
            if "int8" in results:
                name, host, target = results["int8"]
                error = max(abs(p - f["probabilities"][k])
                            for q, f in zip(host, results["f32"][1])
                            for k, p in q["probabilities"].items())
                tol = max(PROB_TOL, INT8_BUDGET_FACTOR * error)
                int8_budget = max(int8_budget, tol)
                compare(name, host, target, tol, "int8")
    print(f"predict_parity: {rows_checked} rows agree; worst |probability diff| {worst['f32']:.3g} "
          f"on the f32 path (tolerance {PROB_TOL}), {worst['int8']:.3g} on the int8 path "
          f"(largest int8 budget {int8_budget:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
