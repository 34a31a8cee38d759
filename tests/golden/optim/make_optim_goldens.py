#!/usr/bin/python3
"""Golden optimizer trajectories from torch.optim: SGD, Adam and AdamW over 10 steps.

Rerun (Debian's python3-torch; the files are committed, so the C++ tests never need torch):
    /usr/bin/python3 tests/golden/optim/make_optim_goldens.py
It rewrites one <case>.safetensors per case of CASES, next to this script.

What it is: for each case, a few random parameters (a weight, a bias and a LayerNorm weight that
get no weight decay, a LoRA-like matrix), a fixed sequence of STEPS random gradient sets, and
torch.optim (the single-tensor implementation: foreach=False, maximize=False, amsgrad=False) driven
by a LambdaLR with the Hugging Face schedule lambda, optionally with clip_grad_norm_ before each
step, as the Hugging Face Trainer does. Weight decay follows the Trainer's convention: two param
groups, the second (biases and LayerNorm weights) with weight_decay 0.
What it is not: a training run; there is no model and no loss, only the optimizer's arithmetic.

Tensors in each file (names as the C++ Param names them):
    init/<name>                        the parameter before the first step
    grad/<k>/<name>                    the gradient handed to step k (k = 0..STEPS-1), before
                                       clipping; absent when the parameter has no grad that step
    param/<k>/<name>                   the parameter after step k
    state/<key>/<name>                 torch's optimizer state after the last step, key one of
                                       exp_avg, exp_avg_sq, step (per parameter), momentum_buffer
    lr                                 (STEPS) float64: the lr torch used at each step
    norm                               (STEPS) the total grad norm clip_grad_norm_ returned (cases
                                       with clipping only)
__metadata__ holds the optimizer, its options, the schedule, max_norm, the dtype, the names of
the parameters without decay, the seed and the torch version.
"""

import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import st_write  # noqa: E402

STEPS = 10
SEED = 20240611

# (name, shape, decay). 37 columns so every tensor has a part that torch's AVX2 kernels process
# 8 (or 16) lanes at a time and a scalar tail: both paths are compared.
PARAMS = [
    ("bert.encoder.layer.0.output.dense.weight", (16, 37), True),
    ("bert.encoder.layer.0.output.dense.bias", (37,), False),
    ("bert.encoder.layer.0.output.LayerNorm.weight", (37,), False),
    ("bert.encoder.layer.0.attention.self.query.lora_A.weight", (4, 19), True),
]

# (name, options). optimizer: sgd / adam / adamw; schedule: constant / linear / cosine (Hugging
# Face's get_*_schedule_with_warmup); max_norm 0 = no clipping; skip: {step: [param index]} of
# parameters whose grad is None at that step (torch then leaves them and their state alone).
CASES = [
    ("sgd_plain", dict(optimizer="sgd", lr=0.1, schedule="constant", warmup=0)),
    ("sgd_momentum_dampening_wd",
     dict(optimizer="sgd", lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01,
          schedule="linear", warmup=2)),
    ("sgd_nesterov_wd",
     dict(optimizer="sgd", lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05,
          schedule="cosine", warmup=0)),
    ("adam_l2", dict(optimizer="adam", lr=1e-2, weight_decay=0.1, schedule="constant", warmup=0)),
    ("adamw_linear", dict(optimizer="adamw", lr=1e-2, weight_decay=0.01, schedule="linear", warmup=3)),
    ("adamw_cosine_clip",
     dict(optimizer="adamw", lr=2e-2, weight_decay=0.05, betas=(0.85, 0.99), eps=1e-6,
          schedule="cosine", warmup=2, max_norm=1.0)),
    ("adam_constant_warmup", dict(optimizer="adam", lr=5e-3, schedule="constant", warmup=3)),
    ("adamw_skip", dict(optimizer="adamw", lr=1e-2, weight_decay=0.02, schedule="linear", warmup=1,
                        skip={1: [3], 2: [3], 6: [1]})),
    ("adamw_cosine_clip_f64",
     dict(optimizer="adamw", lr=2e-2, weight_decay=0.05, betas=(0.85, 0.99), eps=1e-6,
          schedule="cosine", warmup=2, max_norm=1.0, dtype="f64")),
    ("sgd_momentum_dampening_wd_f64",
     dict(optimizer="sgd", lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01,
          schedule="linear", warmup=2, dtype="f64")),
]


# The Hugging Face schedule lambdas (transformers/optimization.py), step = LambdaLR's last_epoch,
# the 0-based index of the optimizer step about to run.
def hf_lambda(kind, warmup, total):
    def constant(step):
        if step < warmup:
            return float(step) / float(max(1.0, warmup))
        return 1.0

    def linear(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))

    def cosine(step, num_cycles=0.5):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        progress = float(step - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))

    return {"constant": constant, "linear": linear, "cosine": cosine}[kind]


def draw(dtype):
    """Initial parameters and STEPS gradient sets, drawn in float64 from SEED, then cast."""
    g = torch.Generator().manual_seed(SEED)
    init = {}
    for name, shape, _ in PARAMS:
        t = torch.randn(shape, generator=g, dtype=torch.float64)
        if name.endswith("LayerNorm.weight"):
            t = 1.0 + 0.1 * t
        elif name.endswith(".bias"):
            t = 0.1 * t
        init[name] = t.to(dtype)
    grads = []
    for k in range(STEPS):
        # Gradients shrink and grow from step to step so Adam's moments see varied magnitudes.
        scale = 0.1 * (1.0 + 0.5 * math.sin(k))
        grads.append({name: (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
                      for name, shape, _ in PARAMS})
    return init, grads


def make_optimizer(o, decay_params, no_decay_params):
    wd = o.get("weight_decay", 0.0)
    groups = [{"params": decay_params, "weight_decay": wd},
              {"params": no_decay_params, "weight_decay": 0.0}]
    if o["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=o["lr"], momentum=o.get("momentum", 0.0),
                               dampening=o.get("dampening", 0.0), nesterov=o.get("nesterov", False),
                               foreach=False)
    betas = o.get("betas", (0.9, 0.999))
    eps = o.get("eps", 1e-8)
    if o["optimizer"] == "adam":
        return torch.optim.Adam(groups, lr=o["lr"], betas=betas, eps=eps, foreach=False)
    return torch.optim.AdamW(groups, lr=o["lr"], betas=betas, eps=eps, foreach=False)


def run_case(name, o):
    dtype = torch.float64 if o.get("dtype") == "f64" else torch.float32
    init, grads = draw(dtype)
    params = {n: init[n].clone().requires_grad_(True) for n, _, _ in PARAMS}
    decay = [params[n] for n, _, d in PARAMS if d]
    no_decay = [params[n] for n, _, d in PARAMS if not d]
    opt = make_optimizer(o, decay, no_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, hf_lambda(o["schedule"], o["warmup"], STEPS))
    max_norm = o.get("max_norm", 0.0)
    skip = o.get("skip", {})

    tensors = [(f"init/{n}", init[n]) for n, _, _ in PARAMS]
    lrs, norms = [], []
    for k in range(STEPS):
        skipped = {PARAMS[i][0] for i in skip.get(k, [])}
        for n, _, _ in PARAMS:
            if n in skipped:
                params[n].grad = None
            else:
                params[n].grad = grads[k][n].clone()
                tensors.append((f"grad/{k}/{n}", grads[k][n]))
        if max_norm > 0:
            norms.append(torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm).item())
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        tensors += [(f"param/{k}/{n}", params[n].detach().clone()) for n, _, _ in PARAMS]

    for n, _, _ in PARAMS:
        for key, value in opt.state[params[n]].items():
            if not torch.is_tensor(value):
                continue
            if key == "step":  # torch keeps the step count as a float32 scalar
                value = value.to(torch.float64).reshape(())
            tensors.append((f"state/{key}/{n}", value))
    tensors.append(("lr", torch.tensor(lrs, dtype=torch.float64)))
    if norms:
        tensors.append(("norm", torch.tensor(norms, dtype=dtype)))

    betas = o.get("betas", (0.9, 0.999))
    meta = {
        "format": "edgetune-golden-optim",
        "version": "1",
        "generator": "tests/golden/optim/make_optim_goldens.py",
        "torch_version": torch.__version__,
        "dtype": "f64" if dtype == torch.float64 else "f32",
        "optimizer": o["optimizer"],
        "lr": repr(o["lr"]),
        "momentum": repr(o.get("momentum", 0.0)),
        "dampening": repr(o.get("dampening", 0.0)),
        "nesterov": "1" if o.get("nesterov", False) else "0",
        "weight_decay": repr(o.get("weight_decay", 0.0)),
        "beta1": repr(betas[0]),
        "beta2": repr(betas[1]),
        "eps": repr(o.get("eps", 1e-8)),
        "schedule": o["schedule"],
        "warmup_steps": str(o["warmup"]),
        "total_steps": str(STEPS),
        "max_norm": repr(max_norm),
        "steps": str(STEPS),
        "params": ",".join(n for n, _, _ in PARAMS),
        "no_decay": ",".join(n for n, _, d in PARAMS if not d),
        "seed": str(SEED),
    }
    return tensors, meta


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    torch.set_num_threads(1)
    for name, o in CASES:
        tensors, meta = run_case(name, o)
        path = os.path.join(here, f"{name}.safetensors")
        size = st_write.write(path, tensors, meta)
        back, back_meta = st_write.read(path)
        assert back_meta == meta
        for n, t in tensors:
            assert torch.equal(back[n], t.detach()), n
        print(f"{os.path.relpath(path)}: {size} bytes, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
