#!/usr/bin/python3
"""Random Hugging Face BERT classifiers and their PyTorch goldens (logits, loss, every gradient).

Rerun (Debian's python3-torch; needs ../shared/data/vocab/bert-base-uncased-vocab.txt, read at
generation time only; the outputs are committed, so the C++ tests need neither torch nor the data):
    /usr/bin/python3 tests/golden/bert/make_bert_goldens.py
It rewrites, next to this script, one folder per model:
    tiny/        L=2, C=64, H=4, F=128, 64 positions, 2 labels, hidden_act "gelu"
    small/       L=4, C=128, H=2, F=256, 128 positions, 3 labels, hidden_act "gelu_new"
    small-f16/   small's weights stored as F16; its goldens use the f16-rounded weights
each holding what a Hugging Face BertForSequenceClassification folder holds (config.json,
model.safetensors, vocab.txt, tokenizer_config.json) plus golden.safetensors and sentences.json.

What it is: BertForSequenceClassification written in plain PyTorch with Hugging Face's module
names, so state_dict() gives HF's tensor names, and HF's semantics: embeddings =
LayerNorm(word + position + token_type) (word_embeddings has padding_idx 0, so its row 0 gets no
gradient, as in HF), encoder layers, pooler = tanh(dense(h[:, 0])), classifier; dropout off (eval);
loss = mean cross-entropy. Weights are initialised as HF does (normal(0, 0.02) weights, zero biases,
LayerNorm 1/0, padding row 0) and then every bias and LayerNorm parameter is perturbed with
normal(0, 0.05) noise so the goldens exercise them. What it is not: a trained model; the logits
mean nothing.

The vocabulary is a pruned bert-base-uncased: the five specials, every single-character token and
every "##" + single character token, the pieces the golden sentences need, and the first 500
whole-word tokens from id 1996 on, in the original order.

golden.safetensors: input_ids, token_type_ids, attention_mask (I32, B x T), labels (I32, B),
logits (F32, B x num_labels), loss (F32, shape []), and grad.<name> (F32) for every parameter.
Goldens are computed in float64 from the stored (float32, or f16-rounded) weights and stored as
float32, so they carry no float32 rounding of their own.
"""

import collections
import json
import math
import os
import sys
import unicodedata

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import st_write  # noqa: E402

ORIGINAL_VOCAB = os.path.normpath(
    os.path.join(HERE, "..", "..", "..", "..", "shared", "data", "vocab", "bert-base-uncased-vocab.txt")
)
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
COMMON_WORDS = 500
FIRST_WORD_ID = 1996  # "the": the first whole word of bert-base-uncased after the special blocks

# (text, text_pair or None, label of the 2-label model, label of the 3-label model).
# Written for these tests: punctuation, an accent to strip (café), words split into ## pieces,
# a word with a character missing from the vocabulary (whole word -> [UNK]), and one pair.
SENTENCES = [
    ("The battery lasts all day, and the screen is bright!", None, 1, 2),
    ("I would not buy this again; it broke after two weeks.", None, 0, 0),
    ("Honestly, the plot was predictable, but the acting saved it.", None, 1, 1),
    ("What a waste of money...", None, 0, 0),
    ("Unbelievably smooth setup: it took under 3 minutes.", None, 1, 2),
    ("The café's staff built a snowman☃ for the kids.", None, 1, 2),
    ("Is the hotel close to the station?", "Yes, it's a five-minute walk.", 1, 1),
    ("Meh. It's okay, I guess.", None, 0, 1),
]

MODELS = {
    "tiny": dict(
        num_hidden_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        num_labels=2,
        hidden_act="gelu",
        seed=1234,
    ),
    "small": dict(
        num_hidden_layers=4,
        hidden_size=128,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=128,
        num_labels=3,
        hidden_act="gelu_new",
        seed=5678,
    ),
}
LABEL_NAMES = {2: ["LABEL_0", "LABEL_1"], 3: ["negative", "neutral", "positive"]}


# ------------------------------------------------------------------------------------------------
# Tokenizer: Hugging Face BertTokenizer behaviour (do_lower_case=True), minimal.


def _is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch):
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf")


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp):
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def basic_tokenize(text):
    """Clean, split CJK, lowercase, strip accents, split on whitespace and punctuation."""
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            chars.append(" ")
        elif _is_cjk(cp):
            chars.append(f" {ch} ")
        else:
            chars.append(ch)
    out = []
    for word in "".join(chars).split():
        word = unicodedata.normalize("NFD", word.lower())
        word = "".join(c for c in word if unicodedata.category(c) != "Mn")
        piece = ""
        for ch in word:
            if _is_punctuation(ch):
                if piece:
                    out.append(piece)
                out.append(ch)
                piece = ""
            else:
                piece += ch
        if piece:
            out.append(piece)
    return out


def wordpiece(word, vocab):
    """Greedy longest-match-first WordPiece; a word that cannot be covered is one [UNK]."""
    if len(word) > 100:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end, found = len(word), None
        while start < end:
            sub = word[start:end] if start == 0 else "##" + word[start:end]
            if sub in vocab:
                found = sub
                break
            end -= 1
        if found is None:
            return ["[UNK]"]
        pieces.append(found)
        start = end
    return pieces


def tokenize(text, vocab):
    return [p for w in basic_tokenize(text) for p in wordpiece(w, vocab)]


def encode(text, pair, vocab):
    """[CLS] a [SEP] (b [SEP]) -> (tokens, token_type_ids)."""
    a = ["[CLS]"] + tokenize(text, vocab) + ["[SEP]"]
    types = [0] * len(a)
    if pair is not None:
        b = tokenize(pair, vocab) + ["[SEP]"]
        a += b
        types += [1] * len(b)
    return a, types


def pruned_vocab():
    with open(ORIGINAL_VOCAB, encoding="utf-8") as f:
        original = [line.rstrip("\n") for line in f]
    full = set(original)
    needed = set()
    for text, pair, _, _ in SENTENCES:
        needed.update(encode(text, pair, full)[0])
    words = [t for t in original[FIRST_WORD_ID:] if not t.startswith("##") and len(t) > 1]
    keep = set(SPECIALS) | needed | set(words[:COMMON_WORDS])
    kept = [
        t
        for t in original
        if t in keep or len(t) == 1 or (len(t) == 3 and t.startswith("##"))
    ]
    assert kept[:5] == SPECIALS, kept[:5]
    # The pruned vocabulary must tokenize the sentences exactly as the full one does.
    for text, pair, _, _ in SENTENCES:
        assert encode(text, pair, set(kept)) == encode(text, pair, full), text
    return kept


# ------------------------------------------------------------------------------------------------
# BertForSequenceClassification in plain PyTorch, with Hugging Face's module names.


def activation(name):
    if name == "gelu":
        return F.gelu  # erf form
    if name == "gelu_new":
        return lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    raise ValueError(name)


class BertEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["hidden_size"]
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], C, padding_idx=cfg["pad_token_id"])
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], C)
        self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], C)
        self.LayerNorm = nn.LayerNorm(C, eps=cfg["layer_norm_eps"])
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def forward(self, input_ids, token_type_ids):
        T = input_ids.shape[1]
        positions = torch.arange(T, dtype=torch.long)[None, :]
        e = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        e = e + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(e))


class BertSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["hidden_size"]
        self.H = cfg["num_attention_heads"]
        self.D = C // self.H
        self.query = nn.Linear(C, C)
        self.key = nn.Linear(C, C)
        self.value = nn.Linear(C, C)
        self.dropout = nn.Dropout(cfg["attention_probs_dropout_prob"])

    def heads(self, z):  # (B, T, C) -> (B, H, T, D)
        B, T, _ = z.shape
        return z.view(B, T, self.H, self.D).permute(0, 2, 1, 3)

    def forward(self, h, ext_mask):
        B, T, C = h.shape
        q, k, v = self.heads(self.query(h)), self.heads(self.key(h)), self.heads(self.value(h))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.D) + ext_mask
        probs = self.dropout(torch.softmax(scores, dim=-1))
        return torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous().view(B, T, C)


class BertSelfOutput(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["hidden_size"]
        self.dense = nn.Linear(C, C)
        self.LayerNorm = nn.LayerNorm(C, eps=cfg["layer_norm_eps"])
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def forward(self, ctx, h):
        return self.LayerNorm(self.dropout(self.dense(ctx)) + h)


class BertAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg)

    def forward(self, h, ext_mask):
        return self.output(self.self(h, ext_mask), h)


class BertIntermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.act = activation(cfg["hidden_act"])

    def forward(self, h):
        return self.act(self.dense(h))


class BertOutput(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["hidden_size"]
        self.dense = nn.Linear(cfg["intermediate_size"], C)
        self.LayerNorm = nn.LayerNorm(C, eps=cfg["layer_norm_eps"])
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def forward(self, i, a):
        return self.LayerNorm(self.dropout(self.dense(i)) + a)


class BertLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)

    def forward(self, h, ext_mask):
        a = self.attention(h, ext_mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(cfg) for _ in range(cfg["num_hidden_layers"])])

    def forward(self, h, ext_mask):
        for layer in self.layer:
            h = layer(h, ext_mask)
        return h


class BertPooler(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["hidden_size"])

    def forward(self, h):
        return torch.tanh(self.dense(h[:, 0]))


class BertModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)
        self.pooler = BertPooler(cfg)

    def forward(self, input_ids, token_type_ids, attention_mask):
        h = self.embeddings(input_ids, token_type_ids)
        dtype = h.dtype
        ext_mask = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        return self.pooler(self.encoder(h, ext_mask))


class BertForSequenceClassification(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.bert = BertModel(cfg)
        p = cfg["classifier_dropout"]
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"] if p is None else p)
        self.classifier = nn.Linear(cfg["hidden_size"], len(cfg["id2label"]))

    def forward(self, input_ids, token_type_ids, attention_mask):
        return self.classifier(self.dropout(self.bert(input_ids, token_type_ids, attention_mask)))


def init_like_hf(model, cfg):
    """HF's _init_weights, then noise on biases and LayerNorms so the goldens exercise them."""
    std = cfg["initializer_range"]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, std)
                m.bias.zero_()
            elif isinstance(m, nn.Embedding):
                m.weight.normal_(0.0, std)
                if m.padding_idx is not None:
                    m.weight[m.padding_idx].zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
        for name, p in model.named_parameters():
            if name.endswith(".bias") or ".LayerNorm." in name:
                p.add_(torch.randn_like(p) * 0.05)


# ------------------------------------------------------------------------------------------------
# Files.


def hf_config(spec, vocab_size):
    """config.json as transformers writes it for BertForSequenceClassification (keys sorted,
    indent 2), without the transformers_version field: no transformers wrote it."""
    n = spec["num_labels"]
    names = LABEL_NAMES[n]
    return {
        "architectures": ["BertForSequenceClassification"],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": None,
        "hidden_act": spec["hidden_act"],
        "hidden_dropout_prob": 0.1,
        "hidden_size": spec["hidden_size"],
        "id2label": {str(i): names[i] for i in range(n)},
        "initializer_range": 0.02,
        "intermediate_size": spec["intermediate_size"],
        "label2id": {names[i]: i for i in range(n)},
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": spec["max_position_embeddings"],
        "model_type": "bert",
        "num_attention_heads": spec["num_attention_heads"],
        "num_hidden_layers": spec["num_hidden_layers"],
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def batch(vocab):
    """Token ids, types, mask and tokens of SENTENCES, padded with [PAD] to the longest row."""
    index = {t: i for i, t in enumerate(vocab)}
    rows = [encode(text, pair, index) for text, pair, _, _ in SENTENCES]
    T = max(len(toks) for toks, _ in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.int32)
    types = torch.zeros(len(rows), T, dtype=torch.int32)
    mask = torch.zeros(len(rows), T, dtype=torch.int32)
    for b, (toks, tt) in enumerate(rows):
        ids[b, : len(toks)] = torch.tensor([index[t] for t in toks], dtype=torch.int32)
        types[b, : len(tt)] = torch.tensor(tt, dtype=torch.int32)
        mask[b, : len(toks)] = 1
    return ids, types, mask, [toks for toks, _ in rows]


def write_folder(name, cfg, state, stored_dtype, vocab, spec):
    """One HF folder + goldens. state: {name: float32 tensor} (already f16-rounded for F16)."""
    folder = os.path.join(HERE, name)
    os.makedirs(folder, exist_ok=True)
    sizes = {}

    def text_file(fname, text):
        path = os.path.join(folder, fname)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        sizes[fname] = os.path.getsize(path)

    text_file("config.json", json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    text_file("vocab.txt", "".join(t + "\n" for t in vocab))
    text_file(
        "tokenizer_config.json",
        json.dumps({"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"}, indent=2)
        + "\n",
    )
    weights = [(k, v.to(stored_dtype)) for k, v in state.items()]
    sizes["model.safetensors"] = st_write.write(
        os.path.join(folder, "model.safetensors"), weights, {"format": "pt"}
    )

    # Goldens in float64 from exactly the stored weights.
    model = BertForSequenceClassification(cfg).double().eval()
    model.load_state_dict({k: v.double() for k, v in state.items()})
    ids, types, mask, tokens = batch(vocab)
    n_labels = len(cfg["id2label"])
    label_col = 2 if n_labels == 2 else 3
    labels = torch.tensor([s[label_col] for s in SENTENCES], dtype=torch.int32)
    logits = model(ids.long(), types.long(), mask.long())
    loss = F.cross_entropy(logits, labels.long())
    params = list(model.named_parameters())
    grads = torch.autograd.grad(loss, [p for _, p in params])
    golden = [
        ("input_ids", ids),
        ("token_type_ids", types),
        ("attention_mask", mask),
        ("labels", labels),
        ("logits", logits.float()),
        ("loss", loss.float().reshape([])),
    ]
    golden += [("grad." + n, g.float()) for (n, _), g in zip(params, grads)]
    meta = {
        "format": "edgetune-golden-bert",
        "version": "1",
        "generator": "tests/golden/bert/make_bert_goldens.py",
        "torch_version": torch.__version__,
        "model": name,
        "weights_dtype": "F16" if stored_dtype == torch.float16 else "F32",
        "compute_dtype": "float64",
        "loss": "cross_entropy(logits, labels), mean over the batch",
        "mode": "eval (dropout off)",
        "attention_mask": "additive (1 - mask) * finfo(float64).min",
        "word_embeddings_padding_idx": "0 (row 0 gets no gradient, as in Hugging Face)",
    }
    sizes["golden.safetensors"] = st_write.write(os.path.join(folder, "golden.safetensors"), golden, meta)

    names = LABEL_NAMES[n_labels]
    records = []
    for (text, pair, _, _), toks, b in zip(SENTENCES, tokens, range(len(SENTENCES))):
        r = {"text": text}
        if pair is not None:
            r["text_pair"] = pair
        r["label"] = int(labels[b])
        r["label_name"] = names[int(labels[b])]
        r["tokens"] = toks
        r["input_ids"] = ids[b, : len(toks)].tolist()
        records.append(r)
    # One sentence per line: readable, and a diff shows which sentence changed.
    lines = ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in records)
    text_file("sentences.json", "[\n" + lines + "\n]\n")

    # Self-check: what was written reads back to the same values.
    back, _ = st_write.read(os.path.join(folder, "golden.safetensors"))
    for k, v in golden:
        assert torch.equal(back[k], v.detach()), k
    total = sum(sizes.values())
    print(f"{os.path.relpath(folder)}: " + ", ".join(f"{k} {v}" for k, v in sizes.items()) + f" (total {total} bytes)")
    print(f"  loss {loss.item():.6f}, logits[0] {logits[0].tolist()}")
    return total


def main():
    vocab = pruned_vocab()
    print(f"vocabulary: {len(vocab)} tokens")
    total = 0
    for name, spec in MODELS.items():
        cfg = hf_config(spec, len(vocab))
        torch.manual_seed(spec["seed"])
        model = BertForSequenceClassification(cfg)
        init_like_hf(model, cfg)
        state = collections.OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
        total += write_folder(name, cfg, state, torch.float32, vocab, spec)
        if name == "small":
            rounded = collections.OrderedDict((k, v.half().float()) for k, v in state.items())
            total += write_folder("small-f16", cfg, rounded, torch.float16, vocab, spec)
    print(f"total {total} bytes")
    ids, _, _, tokens = batch(vocab)
    for (text, pair, _, _), toks, b in zip(SENTENCES, tokens, range(len(SENTENCES))):
        print(f"  {text!r}{' + ' + repr(pair) if pair else ''}")
        print(f"    {toks}")
        print(f"    {ids[b, : len(toks)].tolist()}")


if __name__ == "__main__":
    main()
