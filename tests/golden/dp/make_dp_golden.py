#!/usr/bin/python3
"""DP-SGD golden: the private gradient of one step with per-sample clipping, in plain PyTorch.

Rerun (Debian's python3-torch, nothing else; from any folder):
    /usr/bin/python3 tests/golden/dp/make_dp_golden.py
The output is committed: tests/engine/test_dp.cpp needs neither torch nor this script.

What it is: the `tiny` model of tests/golden/bert with the starting LoRA of
tests/golden/finetune/init/lora (r 4, alpha 8 on query and value; the classifier trains too),
dropout 0, in float64, over batches 0 and 1 of tests/golden/finetune/batches.safetensors taken as
one fixed sample (no Poisson sampling) of B rows. For each row alone (the row as its batch pads
it, a micro-batch of one):
    loss_i = cross_entropy(logits(row i), label i); g_i = d loss_i / d (every trainable tensor)
    norm_i = sqrt(sum over all trainable tensors of |g_i|^2)
    g_i *= min(1, C / (norm_i + 1e-6))                       (Opacus' per-sample clipping)
and the private gradient with noise multiplier 0 is sum_i g_i / B. C is
the midpoint of the smallest and largest norm rounded to three digits, so some rows are clipped
and some are not (checked).

Files written next to this script, one per base storage (f32, q4: the fake quantization of
make_finetune_goldens.py):
    lora-<base>.safetensors   norm (F64, B: norm_i before clipping), loss (F64, B: loss_i),
                              grad.<name> (F32: the private gradient of every trainable tensor,
                              under edgetune's names); metadata max_grad_norm (C), rows (B).
"""

import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(GOLDEN, "finetune"))
sys.path.insert(0, os.path.join(GOLDEN, "bert"))
sys.path.insert(0, GOLDEN)
import make_finetune_goldens as ft  # noqa: E402
import st_write  # noqa: E402

FORMAT = {"format": "edgetune-golden-dp", "version": "1", "generator": "tests/golden/dp/make_dp_golden.py",
          "torch_version": torch.__version__, "model": ft.TINY_REL, "compute_dtype": "float64",
          "adapter": "tests/golden/finetune/init/lora", "batches": "0,1 of tests/golden/finetune/batches.safetensors"}


def fixed_batch():
    """Batches 0 and 1, each row kept with its own batch's padding (edgetune splits a large sample
    into batches the same way)."""
    data, _ = st_write.read(os.path.join(GOLDEN, "finetune", "batches.safetensors"))
    rows = []
    for b in (0, 1):
        ids, types, mask, labels = (data[f"batch.{b}.{k}"] for k in ("input_ids", "token_type_ids",
                                                                     "attention_mask", "labels"))
        rows += [(ids[i : i + 1], types[i : i + 1], mask[i : i + 1], labels[i : i + 1]) for i in range(ids.shape[0])]
    return rows


def private_gradient(base, batch):
    model = ft.base_model(base)
    ft.apply_adapter_folder(model, os.path.join(GOLDEN, "finetune", "init", "lora"))
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("classifier.") or ".lora_" in name)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    grads, norms, losses = [], [], []
    for ids, types, mask, labels in batch:
        loss = F.cross_entropy(model(ids.long(), types.long(), mask.long()), labels.long())
        g = torch.autograd.grad(loss, params)
        grads.append(g)
        norms.append(float(torch.sqrt(sum((x * x).sum() for x in g))))
        losses.append(loss.item())
    c = float(f"{(min(norms) + max(norms)) / 2:.3g}")
    clipped = sum(n > c for n in norms)
    assert 0 < clipped < len(norms), (c, norms)
    total = [torch.zeros_like(p) for p in params]
    for g, n in zip(grads, norms):
        factor = min(1.0, c / (n + 1e-6))
        for t, x in zip(total, g):
            t += x * factor
    out = [("norm", torch.tensor(norms, dtype=torch.float64)), ("loss", torch.tensor(losses, dtype=torch.float64))]
    out += [("grad." + n, (t / len(batch)).float()) for (n, _), t in zip(named, total)]
    meta = dict(FORMAT, base=base, rows=len(batch), max_grad_norm=repr(c), noise_multiplier="0",
                clipped=clipped, lora_r=ft.LORA["r"], lora_alpha=ft.LORA["alpha"],
                lora_targets=",".join(ft.LORA["targets"]))
    path = os.path.join(HERE, f"lora-{base}.safetensors")
    size = st_write.write(path, out, meta)
    print(f"{os.path.relpath(path, ft.REPO)}: {size} bytes, {len(batch)} rows, C {c}, {clipped} clipped")


def main():
    batch = fixed_batch()
    for base in ("f32", "q4"):
        private_gradient(base, batch)


if __name__ == "__main__":
    main()
