#!/usr/bin/python3
"""Golden values for one BERT encoder layer: forward output and every gradient, from PyTorch.

Rerun (Debian's python3-torch; the files are committed, so the C++ tests never need torch):
    /usr/bin/python3 tests/golden/encoder/make_encoder_golden.py
It rewrites, next to this script:
    encoder_f64.safetensors   the layer computed in float64 (for gradcheck-grade comparisons)
    encoder_f32.safetensors   the same parameters rounded to float32, computed in float32

What it is: Hugging Face's BertLayer (attention, attention output + LayerNorm, intermediate with
GELU (erf), output + LayerNorm), written here in plain PyTorch so no transformers package is
needed, with dropout 0. What it is not: a model; one layer with small random parameters.

Shapes: B=2, T=7, C=32, H=4 heads of D=8, F=64, layer_norm_eps=1e-12. The attention mask (B, T)
keeps every token of the first sequence and pads the last 3 of the second; it becomes HF's
additive mask (1 - mask[:, None, None, :]) * finfo(dtype).min. The scalar whose gradients are
stored is L = sum(output * cotangent) with a fixed random cotangent.

Tensors in each file: x (B, T, C), mask (B, T) (0/1 in the file's float dtype), cotangent
(B, T, C), the parameters under their HF names relative to the layer
(attention.self.query.weight, ..., output.LayerNorm.bias), output (B, T, C), grad.x, and
grad.<parameter name> for every parameter. __metadata__ holds the shapes, eps and torch version.
"""

import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import st_write  # noqa: E402

B, T, C, H, FF = 2, 7, 32, 4, 64
D = C // H
EPS = 1e-12
SEED = 20240601

# (name, shape, kind): kind picks the initial distribution.
PARAMS = [
    ("attention.self.query.weight", (C, C), "w"),
    ("attention.self.query.bias", (C,), "b"),
    ("attention.self.key.weight", (C, C), "w"),
    ("attention.self.key.bias", (C,), "b"),
    ("attention.self.value.weight", (C, C), "w"),
    ("attention.self.value.bias", (C,), "b"),
    ("attention.output.dense.weight", (C, C), "w"),
    ("attention.output.dense.bias", (C,), "b"),
    ("attention.output.LayerNorm.weight", (C,), "ln"),
    ("attention.output.LayerNorm.bias", (C,), "b"),
    ("intermediate.dense.weight", (FF, C), "w"),
    ("intermediate.dense.bias", (FF,), "b"),
    ("output.dense.weight", (C, FF), "w"),
    ("output.dense.bias", (C,), "b"),
    ("output.LayerNorm.weight", (C,), "ln"),
    ("output.LayerNorm.bias", (C,), "b"),
]


def draw_inputs():
    """Parameters, x, mask and cotangent in float64, from a fixed seed."""
    g = torch.Generator().manual_seed(SEED)

    def normal(shape, std):
        return torch.randn(shape, generator=g, dtype=torch.float64) * std

    params = {}
    for name, shape, kind in PARAMS:
        if kind == "w":
            params[name] = normal(shape, 0.2)
        elif kind == "ln":
            params[name] = 1.0 + normal(shape, 0.1)
        else:
            params[name] = normal(shape, 0.1)
    x = normal((B, T, C), 1.0)
    mask = torch.ones(B, T, dtype=torch.float64)
    mask[1, T - 3 :] = 0.0
    cotangent = normal((B, T, C), 1.0)
    return params, x, mask, cotangent


def bert_layer(x, mask, p):
    """HF BertLayer forward (eval mode) on x (B, T, C) with a 0/1 mask (B, T)."""
    dtype = x.dtype

    def linear(z, name):
        return F.linear(z, p[name + ".weight"], p[name + ".bias"])

    def heads(z):  # (B, T, C) -> (B, H, T, D)
        return z.view(B, T, H, D).permute(0, 2, 1, 3)

    q = heads(linear(x, "attention.self.query"))
    k = heads(linear(x, "attention.self.key"))
    v = heads(linear(x, "attention.self.value"))
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D)
    ext_mask = (1.0 - mask[:, None, None, :]) * torch.finfo(dtype).min
    probs = torch.softmax(scores + ext_mask, dim=-1)
    ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous().view(B, T, C)
    a = F.layer_norm(
        linear(ctx, "attention.output.dense") + x,
        (C,),
        p["attention.output.LayerNorm.weight"],
        p["attention.output.LayerNorm.bias"],
        EPS,
    )
    i = F.gelu(linear(a, "intermediate.dense"))  # erf form, BERT's "gelu"
    return F.layer_norm(
        linear(i, "output.dense") + a, (C,), p["output.LayerNorm.weight"], p["output.LayerNorm.bias"], EPS
    )


def golden(dtype, params64, x64, mask64, cot64):
    """Tensors of one golden file, computed in `dtype`."""
    params = {n: t.to(dtype).requires_grad_(True) for n, t in params64.items()}
    x = x64.to(dtype).requires_grad_(True)
    mask = mask64.to(dtype)
    cot = cot64.to(dtype)
    out = bert_layer(x, mask, params)
    loss = (out * cot).sum()
    names = [n for n, _, _ in PARAMS]
    grads = torch.autograd.grad(loss, [x] + [params[n] for n in names])
    tensors = [("x", x), ("mask", mask), ("cotangent", cot)]
    tensors += [(n, params[n]) for n in names]
    tensors += [("output", out), ("grad.x", grads[0])]
    tensors += [("grad." + n, g) for n, g in zip(names, grads[1:])]
    return tensors


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    params64, x64, mask64, cot64 = draw_inputs()
    for dtype, suffix in ((torch.float64, "f64"), (torch.float32, "f32")):
        meta = {
            "format": "edgetune-golden-encoder",
            "version": "1",
            "generator": "tests/golden/encoder/make_encoder_golden.py",
            "torch_version": torch.__version__,
            "dtype": suffix,
            "B": B,
            "T": T,
            "C": C,
            "H": H,
            "D": D,
            "F": FF,
            "layer_norm_eps": repr(EPS),
            "hidden_act": "gelu",
            "mask_value": "finfo(dtype).min",
            "loss": "sum(output * cotangent)",
            "seed": SEED,
        }
        path = os.path.join(here, f"encoder_{suffix}.safetensors")
        tensors = golden(dtype, params64, x64, mask64, cot64)
        size = st_write.write(path, tensors, meta)
        back, _ = st_write.read(path)
        for name, t in tensors:
            assert torch.equal(back[name], t.detach()), name
        print(f"{os.path.relpath(path)}: {size} bytes, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
