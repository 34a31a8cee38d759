"""A tiny safetensors writer and reader for the golden scripts (json + struct, no other package).

What it is: just enough of the format to write the test goldens from PyTorch tensors and read them
back for a self-check, so the scripts need nothing beyond Debian's python3-torch. It writes F32,
F64, F16 and I32 (and I64 when given int64); it is not a general safetensors implementation.

Layout (the same as edgetune::safetensors::save): 8-byte little-endian header length, the JSON
header with "__metadata__" first and the tensors in the given order, padded with spaces to a
multiple of 8 bytes, then the tensors' bytes packed in that order. The file is written to a
temporary name and renamed, so an interrupted run never leaves a torn golden behind.
"""

import json
import os
import struct
import sys

import torch

assert sys.byteorder == "little", "safetensors data is little-endian"

_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.int64: "I64",
    torch.int32: "I32",
}
_TORCH = {v: k for k, v in _DTYPES.items()}


def write(path, tensors, metadata=None):
    """Writes [(name, tensor), ...] and a {str: str} metadata dict to path; returns its size."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, t in tensors:
        if name in header:
            raise ValueError(f"{path}: tensor {name!r} given twice")
        t = t.detach().contiguous().cpu()
        if t.dtype not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {t.dtype}, not one of {list(_DTYPES)}")
        blob = t.numpy().tobytes()
        header[name] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return os.path.getsize(path)


def read(path):
    """Returns ({name: tensor}, metadata) of a safetensors file written by write()."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    metadata = header.pop("__metadata__", {})
    data = raw[8 + n :]
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        dtype = _TORCH[e["dtype"]]
        t = torch.frombuffer(bytearray(data[b:end]), dtype=dtype) if end > b else torch.zeros(0, dtype=dtype)
        out[name] = t.reshape(e["shape"])
    return out, metadata
