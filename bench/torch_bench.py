#!/usr/bin/python3
"""The PyTorch side of `edgetune bench`: one training configuration, timed, in its own process.

A BERT classifier written in plain PyTorch with Hugging Face's module math (no transformers
package), float32, freshly initialised as Hugging Face does (normal(0, 0.02)), trained with AdamW for
a few steps on the same synthetic batch edgetune uses (token id of row b, position t:
1000 + ((b*T + t) * 7919) % (V - 1000); label b % 2; no padding). LoRA is the PEFT formulation on
the frozen base: y = x W^T + b + (alpha / r) * B(A(x)), A Kaiming-uniform(a=sqrt 5), B zero; full
fine-tuning trains every weight. Prints one JSON line: median step time, tokens/s, VmHWM.

Run with Debian's python3-torch (1.13): /usr/bin/python3 bench/torch_bench.py --shape base ...
Threads: torch.set_num_threads(--threads); the caller sets OMP_NUM_THREADS to the same value and
OPENBLAS_NUM_THREADS for OpenBLAS (libopenblas0-pthread) under torch's matmuls, so that torch's
threads times OpenBLAS's stay within the cores (edgetune bench runs both splits).
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = {  # L, H (hidden), A (heads), F (feed-forward)
    "tiny": (2, 128, 2, 512),
    "mini": (4, 256, 4, 1024),
    "small": (4, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
}


class LoraLinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling


class Layer(nn.Module):
    def __init__(self, c, heads, f, p):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.attn_out, self.ln1 = nn.Linear(c, c), nn.LayerNorm(c, eps=1e-12)
        self.inter, self.out, self.ln2 = nn.Linear(c, f), nn.Linear(f, c), nn.LayerNorm(c, eps=1e-12)
        self.p = p

    def forward(self, x, mask):
        b, t, c = x.shape
        d = c // self.heads

        def split(y):
            return y.view(b, t, self.heads, d).permute(0, 2, 1, 3)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + mask
        probs = F.dropout(scores.softmax(-1), self.p, self.training)
        ctx = (probs @ v).permute(0, 2, 1, 3).reshape(b, t, c)
        a = self.ln1(F.dropout(self.attn_out(ctx), self.p, self.training) + x)
        i = F.gelu(self.inter(a))
        return self.ln2(F.dropout(self.out(i), self.p, self.training) + a)


class Bert(nn.Module):
    def __init__(self, vocab, layers, c, heads, f, labels=2, p=0.1):
        super().__init__()
        self.word = nn.Embedding(vocab, c, padding_idx=0)
        self.pos = nn.Embedding(512, c)
        self.token_type = nn.Embedding(2, c)
        self.ln = nn.LayerNorm(c, eps=1e-12)
        self.layers = nn.ModuleList(Layer(c, heads, f, p) for _ in range(layers))
        self.pooler = nn.Linear(c, c)
        self.classifier = nn.Linear(c, labels)
        self.p = p
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, ids, attention_mask):
        t = ids.shape[1]
        h = self.word(ids) + self.token_type(torch.zeros_like(ids)) + self.pos(torch.arange(t))
        h = F.dropout(self.ln(h), self.p, self.training)
        mask = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.layers:
            h = layer(h, mask)
        pooled = torch.tanh(self.pooler(h[:, 0]))
        return self.classifier(F.dropout(pooled, self.p, self.training))


def peak_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=SHAPES, required=True)
    # predict: forward passes only (eval mode, no autograd), with the LoRA layers of lora.
    ap.add_argument("--method", choices=["lora", "full", "predict"], default="lora")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--vocab-size", type=int, default=30522)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--lora-alpha", type=float, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    L, C, H, Fw = SHAPES[a.shape]
    t0 = time.perf_counter()
    model = Bert(a.vocab_size, L, C, H, Fw)
    if a.method in ("lora", "predict"):
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in model.layers:
            layer.query = LoraLinear(layer.query, a.lora_rank, a.lora_alpha)
            layer.value = LoraLinear(layer.value, a.lora_rank, a.lora_alpha)
        for p in model.classifier.parameters():
            p.requires_grad_(True)
    init_seconds = time.perf_counter() - t0
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=5e-4)
    B, T, V = a.batch_size, a.max_length, a.vocab_size
    ids = torch.tensor([[1000 + ((b * T + t) * 7919) % (V - 1000) for t in range(T)] for b in range(B)])
    mask = torch.ones(B, T, dtype=torch.long)
    labels = torch.tensor([b % 2 for b in range(B)])
    times = []
    result = {}
    if a.method == "predict":
        model.eval()
        with torch.no_grad():
            for step in range(a.warmup + a.steps):
                s = time.perf_counter()
                F.softmax(model(ids, mask), dim=-1)
                if step >= a.warmup:
                    times.append(time.perf_counter() - s)
        result["trainable_parameters"] = 0
    else:
        for step in range(a.warmup + a.steps):
            s = time.perf_counter()
            loss = F.cross_entropy(model(ids, mask), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=False)
            if step >= a.warmup:
                times.append(time.perf_counter() - s)
        result["trainable_parameters"] = sum(p.numel() for p in params)
        result["loss"] = float(loss)
    med = statistics.median(times)
    print(json.dumps({
        "engine": "pytorch", "version": torch.__version__, "shape": a.shape, "method": a.method,
        "quant": "f32", "batch_size": B, "max_length": T, "threads": a.threads,
        "step_seconds": times, "median_step_seconds": med, "tokens_per_second": B * T / med,
        "init_seconds": init_seconds, "peak_rss": peak_rss(), **result,
    }))

if __name__ == "__main__":
    main()
