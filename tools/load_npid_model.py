#!/usr/bin/env python3
"""Loads an npid model file (safetensors, PyTorch layout, torchvision names)
into PyTorch without the safetensors package, and optionally checks our
embeddings against PyTorch's on the same images.

    python3 tools/load_npid_model.py RUN/model.safetensors
        [--images images.f32 --embeddings emb.f32 --batch B]

A training checkpoint (RUN/checkpoint.safetensors) works too: its memory
bank, optimizer and trainer tensors are set aside, the network's load.

Width 64: torchvision.models.resnet18 itself (CIFAR stem swapped in), loaded
with strict=True; other widths: bench/torch/resnet_torch.py's module with the
same names. Exits 0 when the weights load strictly (and embeddings agree within
1e-4), 1 otherwise, 77 when PyTorch is missing.
"""
import argparse
import json
import os
import struct
import sys

DTYPES = {"F32": "float32", "BF16": None, "I64": "int64", "I32": "int32", "U8": "uint8"}


def read_safetensors(path):
    import numpy as np
    import torch
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    state = {}
    for name, e in header.items():
        b0, b1 = e["data_offsets"]
        raw = data[b0:b1]
        if e["dtype"] == "BF16":
            t = torch.from_numpy(np.frombuffer(raw, dtype=np.int16).copy()).view(torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(raw, dtype=DTYPES[e["dtype"]]).copy())
        state[name] = t.reshape(e["shape"])
    return state, meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--images")
    ap.add_argument("--embeddings")
    ap.add_argument("--batch", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("SKIPPED: no PyTorch")
        return 77
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "torch"))
    import resnet_torch as rt
    state, meta = read_safetensors(args.model)
    # A training checkpoint also holds the bank, SGD's momentum and the trainer's Z.
    extra = [k for k in state if k == "memory_bank" or k.startswith(("optimizer.", "trainer."))]
    for k in extra:
        del state[k]
    if extra:
        print(f"note: {args.model} is a training checkpoint; set aside: {', '.join(sorted(extra))}")
    cfg = json.loads(meta["npid.model"])
    stem, width, dim, size = cfg["stem"], cfg["width"], cfg["embedding_dim"], cfg["image_size"]
    if width == 64:
        model = rt.torchvision_embedding(stem, dim)
        model.load_state_dict({"net." + k: v for k, v in state.items()}, strict=True)
        what = "torchvision.models.resnet18"
    else:
        model = rt.ResNet18Embedding(stem, width, dim)
        model.load_state_dict(state, strict=True)
        what = f"ResNet18Embedding(width={width})"
    # BatchNorm's eps and momentum are not tensors: carry them over from the
    # model's metadata (eval embeddings depend on eps).
    eps, momentum = float(cfg.get("bn_eps", 1e-5)), float(cfg.get("bn_momentum", 0.1))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps, m.momentum = eps, momentum
    print(f"ok: {args.model} loads strictly into {what} ({len(state)} tensors, BatchNorm eps {eps:g})")
    if args.images:
        import numpy as np
        x = torch.from_numpy(np.fromfile(args.images, dtype=np.float32)).view(args.batch, size, size, 3)
        ours = torch.from_numpy(np.fromfile(args.embeddings, dtype=np.float32)).view(args.batch, dim)
        with torch.no_grad():
            theirs = model.eval()(x.permute(0, 3, 1, 2))
        err = float((ours - theirs).abs().max())
        print(f"eval-mode embeddings: max |ours - PyTorch| = {err:.2e}")
        if err > 1e-4:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
