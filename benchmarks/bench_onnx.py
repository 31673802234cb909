"""The ONNX Runtime backend of the MiniLM text encoder, step by step, against torch fp32.

Every variant encodes the same real item texts (Amazon Arts titles + attributes) in
batches of ``--batch-size``; runs are interleaved round by round (the order rotates) and
each variant's ratio is the median over rounds of torch time / its time, so load from
other processes mostly cancels. Quality: cosine of each variant's vectors to the torch
vectors (mean and min over all texts of the run). Variants:

* ``torch fp32`` -- ``create_encoder("sentence-transformer")`` (the reference);
* ``onnx fp32, plain export`` / ``+ fused`` -- ``torch.onnx.export``, then ONNX Runtime's
  transformer optimizer (Attention, SkipLayerNorm, BiasGelu fusions);
* ``int8 per tensor`` / ``int8 per channel`` -- dynamic quantisation, with and without the
  fusions (``backend="onnx", quantize="int8"`` is per channel, fused);
* ``unsorted batches`` -- the backend's batches in input order instead of longest first;
* ``padded to 32`` -- each batch padded to a multiple of 32 tokens (a few static shapes);
* ``1 thread`` -- the backend with one intra-op thread instead of torch's count.

    PYTHONPATH=. python benchmarks/bench_onnx.py [--texts 256] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_encoders import DATA, interleaved  # noqa: E402
from encoders import create_encoder  # noqa: E402
from encoders.base import file_digest  # noqa: E402
from encoders.onnx_backend import OnnxTransformer, Recipe, cached_model  # noqa: E402
from encoders.text import combine_text_fields  # noqa: E402


def variant(recipe: Recipe, root: Path, threads: int | None = None):
    """A sentence-transformer encoder whose transformer runs the ONNX file of ``recipe``."""
    enc = create_encoder("sentence-transformer", backend="onnx")
    path = cached_model(enc.net[0].auto_model, enc.net.preprocess(["an example title"]),
                        [file_digest(p) for p in enc.weight_files()], recipe, root)
    enc.session = OnnxTransformer(path, threads)
    return enc


def by_hand(enc, texts: list[str], batch: int, sort: bool, pad: int = 0) -> np.ndarray:
    """``enc.encode`` without its longest-first order (``sort=False``) or with each batch's
    token axis padded to a multiple of ``pad``."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i])) if sort else list(range(len(texts)))
    out = np.zeros((len(texts), enc.dim), np.float32)
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        b = enc.collate([texts[i] for i in idx])
        if pad:
            extra = -b["input_ids"].shape[1] % pad
            b = {k: torch.nn.functional.pad(v, (0, extra)) if isinstance(v, torch.Tensor) else v
                 for k, v in b.items()}
        with torch.inference_mode():
            out[idx] = enc(b).numpy()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=256, help="texts per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cache", help="ONNX export cache (default: a temporary folder)")
    args = ap.parse_args(argv)
    import pandas as pd

    items = pd.read_csv(DATA / "amazon_art_office" / "item_listA_F.csv", dtype=str, keep_default_na=False)
    texts = [combine_text_fields(r, ["item_title", "item_attribute"])
             for r in items.head(args.texts * (args.rounds + 1)).to_dict("records")]
    chunk = lambda r: texts[r * args.texts:(r + 1) * args.texts]  # noqa: E731
    root = Path(args.cache or tempfile.mkdtemp(prefix="bench-onnx-"))
    b = args.batch_size
    torch_enc = create_encoder("sentence-transformer", device="cpu")
    backend = variant(Recipe(quantize="int8"), root)
    variants = {
        "torch fp32 (reference)": lambda r, e=torch_enc: e.encode(chunk(r), batch_size=b),
        "onnx fp32, plain export": variant(Recipe(fuse=False), root),
        "onnx fp32, fused": variant(Recipe(), root),
        "onnx int8 per tensor, fused": variant(Recipe(quantize="int8", per_channel=False), root),
        "onnx int8 per channel, plain export": variant(Recipe(fuse=False, quantize="int8"), root),
        "onnx int8 per channel, fused (backend)": backend,
        "backend, unsorted batches": lambda r: by_hand(backend, chunk(r), b, sort=False),
        "backend, batches padded to 32 tokens": lambda r: by_hand(backend, chunk(r), b, sort=True, pad=32),
        "backend, 1 thread": variant(Recipe(quantize="int8"), root, threads=1),
    }
    fns = {k: (v if callable(v) and not isinstance(v, torch.nn.Module) else
               (lambda r, e=v: e.encode(chunk(r), batch_size=b))) for k, v in variants.items()}
    every = list(range(args.rounds))
    truth = np.concatenate([torch_enc.encode(chunk(r), batch_size=b) for r in every])
    quality = {}
    for name, fn in fns.items():
        vec = np.concatenate([fn(r) for r in every])
        cos = (vec * truth).sum(1) / np.linalg.norm(vec, axis=1) / np.linalg.norm(truth, axis=1)
        quality[name] = (cos.mean(), cos.min())
    t = interleaved(fns, args.rounds)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"{args.texts} texts per round, batch {b}, {args.rounds} rounds\n")
    print("| variant | items/s | ratio to torch fp32 | mean cosine | min cosine |")
    print("|---|---|---|---|---|")
    for name in fns:
        print(f"| {name} | {args.texts / t[name][0]:.1f} | {t[name][1]:.2f} | "
              f"{quality[name][0]:.4f} | {quality[name][1]:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
