#!/usr/bin/python3
"""PyTorch logits of tiny/ with attention heads pruned and layers cropped: the golden of
`edgetune compress --drop-heads 0:1,3;1:0 ...` and `--keep-layers 1` (tests/engine/test_model_file.cpp),
and with feed-forward neurons removed (CompressOptions::drop_neurons, tests/engine/test_prune.cpp).

Rerun (Debian's python3-torch; the output is committed, so the C++ tests need no torch):
    /usr/bin/python3 tests/golden/bert/make_pruned_golden.py
It writes tiny/pruned_golden.safetensors: logits.heads (F32, B x 2) of tiny's model after
prune_heads({0: [1, 3], 1: [0]}), and logits.heads_layers (F32, B x 2) of the same model keeping
only its layer 1 (renumbered 0), and logits.ffn (F32, B x 2) of tiny's unpruned model with the
neurons DROP_FFN removed from its feed-forward layers, for tiny/golden.safetensors' inputs,
computed in float64.

Neuron pruning removes the rows of intermediate.dense (weight and bias) and the same columns of
output.dense (its bias stays): the layer's feed-forward width shrinks to F - len(neurons).

Pruning follows Hugging Face's BertAttention.prune_heads (transformers' pytorch_utils
find_pruneable_heads_and_indices and prune_linear_layer): the rows of query, key and value (weights
and biases) of the pruned heads are removed, and the same columns of attention.output.dense; the
layer then has H - len(heads) heads of the same size D. The model is make_bert_goldens.py's plain
PyTorch BertForSequenceClassification (transformers is not needed).
"""

import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import make_bert_goldens as mbg  # noqa: E402
import st_write  # noqa: E402

DROP = {0: [1, 3], 1: [0]}
KEEP = [1]
DROP_FFN = {0: [3, 17, 64, 100, 127], 1: list(range(0, 128, 3))}


def attention_forward(self, h, ext_mask):
    """BertSelfAttention.forward with H * D (HF's all_head_size) in place of C after pruning."""
    B, T, _ = h.shape
    q, k, v = self.heads(self.query(h)), self.heads(self.key(h)), self.heads(self.value(h))
    scores = torch.matmul(q, k.transpose(-1, -2)) / (self.D**0.5) + ext_mask
    probs = self.dropout(torch.softmax(scores, dim=-1))
    return torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous().view(B, T, self.H * self.D)


def prune_linear(linear, index, dim):
    """transformers' prune_linear_layer: keep `index` along dim 0 (rows, and the bias) or 1."""
    w = linear.weight.index_select(dim, index).clone().detach()
    b = linear.bias.clone().detach() if dim == 1 else linear.bias[index].clone().detach()
    out = torch.nn.Linear(w.shape[1], w.shape[0]).to(w.dtype)
    out.weight = torch.nn.Parameter(w)
    out.bias = torch.nn.Parameter(b)
    return out


def prune_heads(attention, heads):
    """BertAttention.prune_heads for a layer with no head pruned yet."""
    s = attention.self
    mask = torch.ones(s.H, s.D)
    for h in heads:
        mask[h] = 0
    index = torch.arange(len(mask.view(-1)))[mask.view(-1).eq(1)].long()
    s.query = prune_linear(s.query, index, 0)
    s.key = prune_linear(s.key, index, 0)
    s.value = prune_linear(s.value, index, 0)
    attention.output.dense = prune_linear(attention.output.dense, index, 1)
    s.H -= len(heads)


def prune_neurons(layer, neurons):
    """Rows of intermediate.dense and columns of output.dense at `neurons` removed."""
    keep = torch.tensor([i for i in range(layer.intermediate.dense.out_features) if i not in neurons]).long()
    layer.intermediate.dense = prune_linear(layer.intermediate.dense, keep, 0)
    layer.output.dense = prune_linear(layer.output.dense, keep, 1)


def load_model(cfg, state):
    model = mbg.BertForSequenceClassification(cfg)
    model.load_state_dict({k: v.double() for k, v in state.items()}, strict=True)
    return model.double().eval()


def main():
    mbg.BertSelfAttention.forward = attention_forward
    tiny = os.path.join(HERE, "tiny")
    with open(os.path.join(tiny, "config.json")) as f:
        cfg = json.load(f)
    state, _ = st_write.read(os.path.join(tiny, "model.safetensors"))
    golden, _ = st_write.read(os.path.join(tiny, "golden.safetensors"))
    model = load_model(cfg, state)
    for layer, heads in DROP.items():
        prune_heads(model.bert.encoder.layer[layer].attention, heads)
    inputs = (golden["input_ids"].long(), golden["token_type_ids"].long(), golden["attention_mask"].long())
    out = {}
    with torch.no_grad():
        out["logits.heads"] = model(*inputs).float()
        model.bert.encoder.layer = torch.nn.ModuleList([model.bert.encoder.layer[i] for i in KEEP])
        out["logits.heads_layers"] = model(*inputs).float()
        model = load_model(cfg, state)
        for layer, neurons in DROP_FFN.items():
            prune_neurons(model.bert.encoder.layer[layer], neurons)
        out["logits.ffn"] = model(*inputs).float()
    meta = {"drop_heads": json.dumps({str(k): v for k, v in DROP.items()}), "keep_layers": json.dumps(KEEP),
            "drop_ffn": json.dumps({str(k): v for k, v in DROP_FFN.items()}),
            "script": "make_pruned_golden.py", "version": "1"}
    st_write.write(os.path.join(tiny, "pruned_golden.safetensors"), list(out.items()), meta)
    print("wrote", os.path.join(tiny, "pruned_golden.safetensors"))


if __name__ == "__main__":
    main()
