#!/usr/bin/python3
"""Fine-tuning goldens: ten optimizer steps of each method in PyTorch, and PEFT-layout LoRA
adapters crossing between PyTorch and edgetune in both directions.

Rerun (Debian's python3-torch, nothing else; from any folder):
    /usr/bin/python3 tests/golden/finetune/make_finetune_goldens.py [--edgetune PATH/TO/edgetune]
With --edgetune, the LoRA in edgetune_lora/ is trained again by that binary (`edgetune train` on
edgetune_train.tsv); without it the committed edgetune_lora/ is kept and only read.
The outputs are committed: the C++ tests (tests/engine/test_finetune_parity.cpp and
tests/engine/test_peft_compat.cpp) need neither torch nor this script.

What it is: the `tiny` model of tests/golden/bert (BertForSequenceClassification in plain
PyTorch, imported from make_bert_goldens.py) with its dropout probabilities set to 0, fine-tuned
for 10 optimizer steps the way edgetune's train_step (engine/trainer.h) takes a step:
    for each of the grad_accum batches of the step:
        loss = cross_entropy(logits, labels) (mean over the batch) / grad_accum; loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step() with lr = base_lr * factor(k) (LambdaLR: step k = 0, 1, ... uses factor(k))
    optimizer.zero_grad()
with weight decay off for parameters whose name ends with ".bias" or contains "LayerNorm" (the
Hugging Face Trainer convention; a second parameter group). The classifier always trains.

Cases (each with the base stored f32, q8 and q4, except full, which is float32 by definition):
    lora     LoRA r=4, alpha=8, on query and value, lora_B non-zero so A and B both get gradients;
             AdamW lr 1e-3, wd 0.01; linear decay without warmup; max_grad_norm 1.0
    adapter  Houlsby adapters (bottleneck 8, GELU) after the attention output and the FFN output;
             Adam (L2 decay 0.01) lr 1e-3; constant; max_grad_norm 1.0
    bitfit   every tensor whose name ends with ".bias", and classifier.weight;
             SGD Nesterov momentum 0.9, lr 0.05, wd 0.01; constant; max_grad_norm 1.0
    full     every tensor; AdamW lr 1e-4, wd 0.01; linear with warmup ceil(0.3 * 10) = 3 steps;
             max_grad_norm 0.1 (below the gradients' norm, so clipping acts); grad_accum 2
q8 / q4 are edgetune's storage (autograd/tensor.h), reproduced here in float32 with numpy (IEEE
division, round half to even): q8 s = amax(row) / 127, q = clip(round(w / s), -127, 127); q4 the
same per group of 32 inputs of a row with 7; s == 0 gives zeros; w' = q * s. They apply to the
encoder Linear weights (query, key, value, attention.output.dense, intermediate.dense,
output.dense of every layer) and bert.pooler.dense.weight; PyTorch trains with w' frozen.
Training runs in float64 from the float32 values, so the goldens carry no float32 rounding of
their own: what the C++ test measures is edgetune's float32 error alone.

Files written next to this script:
    batches.safetensors       20 padded batches: batch.{i}.input_ids / token_type_ids /
                              attention_mask (I32, B x T), batch.{i}.labels (I32, B). Batch 0 is
                              the golden sentences of tiny/; the others are random token ids of
                              the vocabulary, some rows with a second segment, padded with [PAD].
    init/lora/, init/adapter/, init/bitfit/
                              the fixed starting adapters, in edgetune's adapter folder layout
                              (adapters/adapter_io.h); full starts from tests/golden/bert/tiny.
    <case>-<base>.safetensors one run: loss (F64, 10: per step, the mean over its batches of each
                              batch's mean loss), grad_norm (F64, 10: before clipping), lr (F64,
                              10: the lr of each step), param.<name> (F32: every trainable tensor
                              after the 10 steps, under edgetune's names).
    peft_lora/                a LoRA written here as PEFT's save_pretrained writes one (r 8,
                              alpha 16, query and value, classifier in modules_to_save)
    edgetune_lora/            a LoRA written by `edgetune train` (r 4, 5 steps on
                              edgetune_train.tsv); base_model_name_or_path made repository-relative
    peft_logits.safetensors   the golden sentences of tiny/ (input_ids, token_type_ids,
                              attention_mask) and the logits PyTorch computes with each adapter
                              applied by PEFT's key names: peft_lora.logits, edgetune_lora.logits,
                              and base.logits without any adapter.
"""

import argparse
import collections
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# The imported scripts live in other folders of tests/golden: leave no __pycache__ there.
sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(GOLDEN))
sys.path.insert(0, GOLDEN)
sys.path.insert(0, os.path.join(GOLDEN, "bert"))
import make_bert_goldens as hf  # noqa: E402
import st_write  # noqa: E402

TINY = os.path.join(GOLDEN, "bert", "tiny")
TINY_REL = os.path.relpath(TINY, REPO)  # tests/golden/bert/tiny
PEFT_PREFIX = "base_model.model."
STEPS = 10
FORMAT = {"format": "edgetune-golden-finetune", "version": "1",
          "generator": "tests/golden/finetune/make_finetune_goldens.py",
          "torch_version": torch.__version__, "model": TINY_REL, "compute_dtype": "float64"}

QUANTIZED = ["attention.self.query", "attention.self.key", "attention.self.value",
             "attention.output.dense", "intermediate.dense", "output.dense"]


# ------------------------------------------------------------------------------------------------
# The base model.


def tiny_config():
    with open(os.path.join(TINY, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    # Dropout 0: the trajectory is deterministic, and eval() mode computes the same thing.
    cfg["hidden_dropout_prob"] = 0.0
    cfg["attention_probs_dropout_prob"] = 0.0
    cfg["classifier_dropout"] = 0.0
    return cfg


def tiny_state():
    state, _ = st_write.read(os.path.join(TINY, "model.safetensors"))
    return collections.OrderedDict(state)


def fake_quant(w, kind):
    """The float32 values edgetune's q8 / q4 storage of float32 (N, K) w dequantizes to."""
    w = w.numpy().astype(np.float32)
    n, k = w.shape
    qmax, group = (127, k) if kind == "q8" else (7, 32)
    out = np.zeros_like(w)
    for j0 in range(0, k, group):
        block = w[:, j0 : min(k, j0 + group)]
        s = np.abs(block).max(axis=1, keepdims=True) / np.float32(qmax)
        assert s.dtype == np.float32
        q = np.clip(np.round(block / np.where(s == 0, np.float32(1), s)), -qmax, qmax)
        q = np.where(s == 0, np.float32(0), q).astype(np.float32)
        out[:, j0 : j0 + block.shape[1]] = q * s
    return torch.from_numpy(out)


def base_model(base):
    """tiny as float64 with its quantizable weights replaced by their `base` storage values."""
    cfg = tiny_config()
    state = tiny_state()
    if base != "f32":
        names = [f"bert.encoder.layer.{i}.{m}.weight" for i in range(cfg["num_hidden_layers"]) for m in QUANTIZED]
        names.append("bert.pooler.dense.weight")
        for name in names:
            state[name] = fake_quant(state[name], base)
    model = hf.BertForSequenceClassification(cfg).double().eval()
    model.load_state_dict({k: v.double() for k, v in state.items()})
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ------------------------------------------------------------------------------------------------
# Adapters, under the module names PEFT and edgetune give them.


class LoraLinear(nn.Module):
    """nn.Linear with PEFT's LoRA: x W^T + b + scaling * lora_B(lora_A(x)), scaling = alpha / r
    (lora_dropout is 0 here, or the model is in eval mode)."""

    def __init__(self, base, a, b, alpha):
        super().__init__()
        self.weight = base.weight
        self.bias = base.bias
        r = a.shape[0]
        self.lora_A = nn.Linear(a.shape[1], r, bias=False).double()
        self.lora_B = nn.Linear(r, b.shape[0], bias=False).double()
        with torch.no_grad():
            self.lora_A.weight.copy_(a.double())
            self.lora_B.weight.copy_(b.double())
        self.scaling = alpha / r

    def forward(self, x):
        return F.linear(x, self.weight, self.bias) + self.lora_B(self.lora_A(x)) * self.scaling


class Houlsby(nn.Module):
    """h + up(gelu(down(h))), inserted after a sub-layer's output dense (and its dropout) and
    before the residual LayerNorm, as engine/bert.cpp does."""

    def __init__(self, down_w, down_b, up_w, up_b):
        super().__init__()
        self.down = nn.Linear(down_w.shape[1], down_w.shape[0]).double()
        self.up = nn.Linear(up_w.shape[1], up_w.shape[0]).double()
        with torch.no_grad():
            for p, v in ((self.down.weight, down_w), (self.down.bias, down_b), (self.up.weight, up_w),
                         (self.up.bias, up_b)):
                p.copy_(v.double())

    def forward(self, h):
        return h + self.up(F.gelu(self.down(h)))


def module(model, path):
    m = model
    for part in path.split("."):
        m = getattr(m, part)
    return m


def peft_matches(key, target_modules):
    """PEFT's check_target_module_exists: a regex string is matched in full against the module
    name, a list of names against the name or its last dotted parts."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, key) is not None
    return any(key == t or key.endswith("." + t) for t in target_modules)


def apply_adapter_folder(model, folder):
    """Applies an adapter folder by PEFT's key names, as PeftModel.from_pretrained would for LoRA
    (edgetune's own methods use the same key scheme). Every tensor of the file must be used.
    Returns the config."""
    with open(os.path.join(folder, "adapter_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    tensors, _ = st_write.read(os.path.join(folder, "adapter_model.safetensors"))
    assert all(k.startswith(PEFT_PREFIX) for k in tensors), list(tensors)
    tensors = {k[len(PEFT_PREFIX) :]: v for k, v in tensors.items()}
    used = set()

    def take(name):
        used.add(name)
        return tensors[name]

    method = "lora" if config.get("peft_type") == "LORA" else config["edgetune_method"]
    if method == "lora":
        assert not config.get("use_rslora", False) and not config.get("rank_pattern")
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        targets = [n for n in names if n.startswith("bert.encoder.") and peft_matches(n, config["target_modules"])]
        assert targets, config["target_modules"]
        for name in targets:
            parent, _, leaf = name.rpartition(".")
            a, b = take(name + ".lora_A.weight"), take(name + ".lora_B.weight")
            assert a.shape[0] == config["r"] and b.shape[1] == config["r"]
            setattr(module(model, parent), leaf, LoraLinear(module(model, name), a, b, config["lora_alpha"]))
    elif method == "adapter":
        assert config["adapter_act"] == "gelu"
        for i, layer in enumerate(model.bert.encoder.layer):
            for sub in (layer.attention.output, layer.output):
                p = f"bert.encoder.layer.{i}." + ("attention.output" if sub is layer.attention.output else "output")
                sub.adapter = Houlsby(*(take(f"{p}.adapter.{w}") for w in
                                        ("down.weight", "down.bias", "up.weight", "up.bias")))
                sub.dense.register_forward_hook(lambda mod, inp, out, a=sub.adapter: a(out))
    else:
        assert method == "bitfit", method
    # Model tensors saved by the method (modules_to_save, biases) replace the model's.
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in tensors.items():
            if name not in used and name in params:
                params[name].copy_(take(name).double())
    left = set(tensors) - used
    assert not left, f"{folder}: tensors not used: {sorted(left)}"
    return config


def write_adapter_folder(folder, config, tensors):
    """adapter_config.json (keys sorted, indent 2, as edgetune and PEFT write it) and
    adapter_model.safetensors with the PEFT prefix on every key."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "adapter_config.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return st_write.write(os.path.join(folder, "adapter_model.safetensors"),
                          [(PEFT_PREFIX + k, v.float()) for k, v in tensors], {"format": "pt"})


# ------------------------------------------------------------------------------------------------
# Data.


def batches(vocab_size, gen):
    """Batch 0: the golden sentences of tiny/. Batches 1..19: random token ids (specials
    excluded) framed as [CLS] a [SEP] (b [SEP]), 3 to 6 rows padded to the longest."""
    g, _ = st_write.read(os.path.join(TINY, "golden.safetensors"))
    out = [(g["input_ids"], g["token_type_ids"], g["attention_mask"], g["labels"])]
    CLS, SEP = 2, 3
    for _ in range(19):
        rows = int(torch.randint(3, 7, (1,), generator=gen))
        T = int(torch.randint(8, 25, (1,), generator=gen))
        ids = torch.zeros(rows, T, dtype=torch.int32)
        types = torch.zeros(rows, T, dtype=torch.int32)
        mask = torch.zeros(rows, T, dtype=torch.int32)
        for r in range(rows):
            n = T if r == 0 else int(torch.randint(4, T + 1, (1,), generator=gen))
            body = torch.randint(5, vocab_size, (n,), generator=gen, dtype=torch.int64).to(torch.int32)
            body[0], body[n - 1] = CLS, SEP
            ids[r, :n] = body
            mask[r, :n] = 1
            if n >= 8 and bool(torch.randint(0, 3, (1,), generator=gen) == 0):  # a pair
                split = int(torch.randint(3, n - 3, (1,), generator=gen))
                ids[r, split - 1] = SEP
                types[r, split:n] = 1
        labels = torch.randint(0, 2, (rows,), generator=gen, dtype=torch.int64).to(torch.int32)
        out.append((ids, types, mask, labels))
    return out


# ------------------------------------------------------------------------------------------------
# Training.


def no_decay(name):
    return name.endswith(".bias") or "LayerNorm" in name


def hf_schedule(kind, warmup, total):
    """transformers' get_{constant,linear}_schedule_with_warmup lambdas."""

    def constant(k):
        return float(k) / float(max(1, warmup)) if k < warmup else 1.0

    def linear(k):
        if k < warmup:
            return float(k) / float(max(1, warmup))
        return max(0.0, float(total - k) / float(max(1, total - warmup)))

    return {"constant": constant, "linear": linear}[kind]


CASES = {
    "lora": dict(optimizer="adamw", lr=1e-3, weight_decay=0.01, schedule="linear", warmup_ratio=0.0,
                 max_grad_norm=1.0, grad_accum=1),
    "adapter": dict(optimizer="adam", lr=1e-3, weight_decay=0.01, schedule="constant", warmup_ratio=0.0,
                    max_grad_norm=1.0, grad_accum=1),
    "bitfit": dict(optimizer="sgd", lr=0.05, weight_decay=0.01, schedule="constant", warmup_ratio=0.0,
                   max_grad_norm=1.0, grad_accum=1, momentum=0.9, nesterov=True),
    "full": dict(optimizer="adamw", lr=1e-4, weight_decay=0.01, schedule="linear", warmup_ratio=0.3,
                 max_grad_norm=0.1, grad_accum=2),
}
LORA = dict(r=4, alpha=8, targets=["query", "value"])
ADAPTER_SIZE = 8


def make_optimizer(spec, named):
    decay = [p for n, p in named if not no_decay(n)]
    rest = [p for n, p in named if no_decay(n)]
    groups = [{"params": decay, "weight_decay": spec["weight_decay"]}, {"params": rest, "weight_decay": 0.0}]
    if spec["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=spec["lr"], betas=(0.9, 0.999), eps=1e-8, foreach=False)
    if spec["optimizer"] == "adam":
        return torch.optim.Adam(groups, lr=spec["lr"], betas=(0.9, 0.999), eps=1e-8, foreach=False)
    return torch.optim.SGD(groups, lr=spec["lr"], momentum=spec["momentum"], dampening=0.0,
                           nesterov=spec["nesterov"], foreach=False)


def train(case, base, data):
    spec = CASES[case]
    model = base_model(base)
    if case == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        apply_adapter_folder(model, os.path.join(HERE, "init", case))
        for name, p in model.named_parameters():
            trains = (name.startswith("classifier.") or ".lora_" in name or ".adapter." in name
                      or (case == "bitfit" and name.endswith(".bias")))
            p.requires_grad_(trains)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    opt = make_optimizer(spec, named)
    warmup = math.ceil(STEPS * spec["warmup_ratio"])  # the Trainer's get_warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, hf_schedule(spec["schedule"], warmup, STEPS))
    accum = spec["grad_accum"]
    losses, norms, lrs = [], [], []
    for k in range(STEPS):
        lrs.append(opt.param_groups[0]["lr"])
        step_loss = 0.0
        for ids, types, mask, labels in data[k * accum : (k + 1) * accum]:
            loss = F.cross_entropy(model(ids.long(), types.long(), mask.long()), labels.long())
            (loss / accum).backward()
            step_loss += loss.item()
        losses.append(step_loss / accum)
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, spec["max_grad_norm"])))
        opt.step()
        sched.step()
        opt.zero_grad()
    if case == "full":
        assert sum(n > spec["max_grad_norm"] for n in norms) >= STEPS // 2, norms  # clipping acts
    out = [("loss", torch.tensor(losses, dtype=torch.float64)),
           ("grad_norm", torch.tensor(norms, dtype=torch.float64)),
           ("lr", torch.tensor(lrs, dtype=torch.float64))]
    out += [("param." + n, p.detach().float()) for n, p in named]
    meta = dict(FORMAT, case=case, base=base, steps=STEPS, batches=f"0..{STEPS * accum - 1}",
                warmup_steps=warmup, total_steps=STEPS, dropout="0 (every probability of the config)",
                decay="off for names ending in .bias or containing LayerNorm",
                loss="cross_entropy mean over the batch / grad_accum per batch",
                **{k: str(v) for k, v in spec.items()})
    if case == "lora":
        meta.update(lora_r=LORA["r"], lora_alpha=LORA["alpha"], lora_targets=",".join(LORA["targets"]))
    if case == "adapter":
        meta.update(adapter_size=ADAPTER_SIZE, adapter_act="gelu")
    path = os.path.join(HERE, f"{case}-{base}.safetensors")
    size = st_write.write(path, out, meta)
    print(f"{os.path.relpath(path, REPO)}: {size} bytes, {len(named)} tensors; loss "
          f"{losses[0]:.6f} -> {losses[-1]:.6f}; grad norm {norms[0]:.4f} -> {norms[-1]:.4f}")
    return size


# ------------------------------------------------------------------------------------------------
# Starting adapters.


def write_inits(gen):
    cfg = tiny_config()
    state = tiny_state()
    C, L = cfg["hidden_size"], cfg["num_hidden_layers"]

    def normal(shape, std):
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std

    # The head starts away from the model's so that loading it is seen.
    head = [(n, state[n] + normal(state[n].shape, 0.02)) for n in ("classifier.weight", "classifier.bias")]
    sizes = {}

    lora = []
    for i in range(L):
        for t in LORA["targets"]:
            p = f"bert.encoder.layer.{i}.attention.self.{t}"
            bound = 1.0 / math.sqrt(C)  # PEFT's kaiming_uniform_(a=sqrt(5)) bound for lora_A
            lora.append((p + ".lora_A.weight", (torch.rand((LORA["r"], C), generator=gen) * 2 - 1) * bound))
            lora.append((p + ".lora_B.weight", normal((C, LORA["r"]), 0.02)))  # non-zero: A trains
    sizes["lora"] = write_adapter_folder(os.path.join(HERE, "init", "lora"), dict(
        peft_type="LORA", task_type="SEQ_CLS", r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0,
        target_modules=LORA["targets"], modules_to_save=["classifier"], bias="none", fan_in_fan_out=False,
        inference_mode=False, init_lora_weights=True, base_model_name_or_path=TINY_REL), lora + head)

    adapter = []
    for i in range(L):
        for sub in ("attention.output", "output"):
            p = f"bert.encoder.layer.{i}.{sub}.adapter"
            adapter += [(p + ".down.weight", normal((ADAPTER_SIZE, C), 0.05)),
                        (p + ".down.bias", normal((ADAPTER_SIZE,), 0.05)),
                        (p + ".up.weight", normal((C, ADAPTER_SIZE), 0.05)),
                        (p + ".up.bias", normal((C,), 0.02))]
    sizes["adapter"] = write_adapter_folder(os.path.join(HERE, "init", "adapter"), dict(
        peft_type=None, edgetune_method="adapter", adapter_size=ADAPTER_SIZE, adapter_act="gelu",
        task_type="SEQ_CLS", modules_to_save=["classifier"], base_model_name_or_path=TINY_REL), adapter + head)

    biases = [(n, v + normal(v.shape, 0.02)) for n, v in state.items()
              if n.endswith(".bias") and not n.startswith("classifier.")]
    sizes["bitfit"] = write_adapter_folder(os.path.join(HERE, "init", "bitfit"), dict(
        peft_type=None, edgetune_method="bitfit", task_type="SEQ_CLS", modules_to_save=["classifier"],
        base_model_name_or_path=TINY_REL), biases + head)
    for k, v in sizes.items():
        print(f"init/{k}/adapter_model.safetensors: {v} bytes")
    return sum(sizes.values())


# ------------------------------------------------------------------------------------------------
# PEFT compatibility.

# Sentences for `edgetune train` (label 1 positive, 0 negative), written for this test.
TRAIN_TSV = [
    ("the room was clean and the staff were kind", 1),
    ("it stopped working after one day", 0),
    ("a great little phone for the price", 1),
    ("the sound is thin and the battery dies fast", 0),
    ("we loved the food and would come back", 1),
    ("nobody answered the phone for a week", 0),
    ("setup took five minutes and it just works", 1),
    ("the box arrived open and a part was missing", 0),
    ("bright screen, good keys, long battery life", 1),
    ("too loud, too slow and too expensive", 0),
    ("the best coffee in the city", 1),
    ("the map was wrong and we got lost twice", 0),
    ("kind people, fair prices, fast delivery", 1),
    ("i want my money back", 0),
    ("easy to use even for my grandmother", 1),
    ("the seat broke on the first ride", 0),
]


def train_edgetune_lora(binary):
    """Runs `edgetune train` into a temporary run folder and keeps its adapter files."""
    tsv = os.path.join(HERE, "edgetune_train.tsv")
    with open(tsv, "w", encoding="utf-8") as f:
        f.write("sentence\tlabel\n" + "".join(f"{s}\t{l}\n" for s, l in TRAIN_TSV))
    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        cmd = [binary, "train", "--model", TINY, "--train", tsv, "--out", run, "--method", "lora",
               "--lora-rank", "4", "--lora-alpha", "8", "--max-steps", "5", "--batch-size", "4",
               "--lr", "5e-3", "--dropout", "0", "--quant", "f32", "--seed", "7", "--threads", "1"]
        print("running: " + " ".join(os.path.relpath(c, REPO) if os.path.isabs(c) and c.startswith(REPO) else c
                                     for c in cmd))
        subprocess.run(cmd, check=True)
        out = os.path.join(HERE, "edgetune_lora")
        os.makedirs(out, exist_ok=True)
        shutil.copyfile(os.path.join(run, "adapter_model.safetensors"), os.path.join(out, "adapter_model.safetensors"))
        with open(os.path.join(run, "adapter_config.json"), encoding="utf-8") as f:
            config = json.load(f)
    # The run wrote this machine's absolute path; the committed folder names the model portably.
    config["base_model_name_or_path"] = TINY_REL
    with open(os.path.join(out, "adapter_config.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_peft_lora(gen):
    """A LoRA as PEFT's save_pretrained writes it for BertForSequenceClassification (LoraConfig
    r 8, lora_alpha 16, lora_dropout 0.1, target_modules query/value, modules_to_save classifier):
    the config's fields as PEFT 0.7 writes them, and keys without the adapter name "default"."""
    cfg = tiny_config()
    C, L, K = cfg["hidden_size"], cfg["num_hidden_layers"], len(cfg["id2label"])
    r = 8
    tensors = []
    for i in range(L):
        for t in ("query", "value"):
            p = f"bert.encoder.layer.{i}.attention.self.{t}"
            tensors.append((p + ".lora_A.weight", (torch.rand((r, C), generator=gen) * 2 - 1) / math.sqrt(C)))
            tensors.append((p + ".lora_B.weight", torch.randn((C, r), generator=gen) * 0.05))
    tensors.append(("classifier.weight", torch.randn((K, C), generator=gen) * 0.05))
    tensors.append(("classifier.bias", torch.randn((K,), generator=gen) * 0.05))
    config = {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": TINY_REL, "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "layers_pattern": None,
        "layers_to_transform": None, "loftq_config": {}, "lora_alpha": 16, "lora_dropout": 0.1,
        "megatron_config": None, "megatron_core": "megatron.core", "modules_to_save": ["classifier"],
        "peft_type": "LORA", "r": r, "rank_pattern": {}, "revision": None,
        "target_modules": ["value", "query"], "task_type": "SEQ_CLS",
    }
    return write_adapter_folder(os.path.join(HERE, "peft_lora"), config, tensors)


def peft_logits():
    g, _ = st_write.read(os.path.join(TINY, "golden.safetensors"))
    inputs = [g["input_ids"], g["token_type_ids"], g["attention_mask"]]

    def logits(folder):
        model = base_model("f32")
        if folder:
            apply_adapter_folder(model, os.path.join(HERE, folder))
        with torch.no_grad():
            return model(*(x.long() for x in inputs))

    base = logits(None)
    out = [("input_ids", inputs[0]), ("token_type_ids", inputs[1]), ("attention_mask", inputs[2]),
           ("base.logits", base.float())]
    for folder in ("peft_lora", "edgetune_lora"):
        z = logits(folder)
        # The adapter must move the logits far beyond the tests' tolerance, or they prove nothing.
        moved = (z - base).abs().max().item()
        assert moved > 1e-2 * base.abs().max().item(), (folder, moved)
        print(f"{folder}: logits move by up to {moved:.4g} from the base model's")
        out.append((folder + ".logits", z.float()))
    meta = dict(FORMAT, sentences=f"{TINY_REL}/golden.safetensors (input ids copied here)",
                adapters="peft_lora/ (written by this script), edgetune_lora/ (written by edgetune train)")
    return st_write.write(os.path.join(HERE, "peft_logits.safetensors"), out, meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edgetune", help="edgetune binary: retrain edgetune_lora/ with it")
    args = ap.parse_args()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(20240611)
    total = write_inits(gen)
    data = batches(tiny_config()["vocab_size"], gen)
    flat = []
    for i, (ids, types, mask, labels) in enumerate(data):
        flat += [(f"batch.{i}.input_ids", ids), (f"batch.{i}.token_type_ids", types),
                 (f"batch.{i}.attention_mask", mask), (f"batch.{i}.labels", labels)]
    total += st_write.write(os.path.join(HERE, "batches.safetensors"), flat,
                            dict(FORMAT, batches=str(len(data)), labels="0..1"))
    for case in CASES:
        for base in (["f32"] if case == "full" else ["f32", "q8", "q4"]):
            total += train(case, base, data)
    total += write_peft_lora(gen)
    if args.edgetune:
        train_edgetune_lora(os.path.abspath(args.edgetune))
    total += os.path.getsize(os.path.join(HERE, "edgetune_lora", "adapter_model.safetensors"))
    total += peft_logits()
    print(f"total {total} bytes of safetensors")


if __name__ == "__main__":
    main()
