"""Training throughput of the fusion model against the same work in stock torch, in one run.

One step = forward + backward of a batch of histories (default 256 users x 50 items) with a
full softmax over every target item (default 20,000), for a ``FusionConfig`` of width 128,
2 layers, 4 heads and attention pooling (the measured size, written out: the trained default
has 1 layer and mean pooling):

* ours: ``InterestModel(histories, "src", "tgt")`` -> cross-entropy -> ``backward()``, with
  per-modality projections, presence masks, id embeddings, attention pooling, adapters,
  content item tower over all target items and item bias;
* reference: the bare minimum in stock torch for the same shapes -- gather each modality's
  vectors, one ``nn.Linear`` each to the width, + position embedding,
  ``nn.TransformerEncoder(norm_first=True)`` with a key padding mask, mean pooling, the same
  linear projections as item tower over all target items, cosine logits, cross-entropy.

Also the scoring throughput (``torch.inference_mode``, full scores over all target items)
the evaluator sees. Item features are random with the widths of the real encoders (MiniLM
384, EfficientNet-Lite0 1280): speed does not depend on their values. Repeats are
interleaved and medians reported; prints a Markdown table.

    PYTHONPATH=. python benchmarks/bench_fusion.py [--device cpu] [--dtype float32|bfloat16]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusion import FusionConfig, InterestConfig, InterestModel, TargetConfig  # noqa: E402


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]) -> dict[str, float]:
    """Median seconds of each function, run in turn ``repeats`` times after two warm-ups."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(2):
        for fn in fns.values():
            fn()
    sync()
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


class StockReference(nn.Module):
    """The same shapes through stock torch modules only: one ``nn.Linear`` per modality (no
    presence masks, no id embeddings, no adapters, no bias), mean pooling."""

    def __init__(self, src: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor], cfg: FusionConfig):
        super().__init__()
        D = cfg.dim
        self.src, self.tgt = list(src.values()), list(tgt.values())
        self.proj = nn.ModuleList([nn.Linear(x.shape[1], D) for x in self.src])
        self.item_proj = nn.ModuleList([nn.Linear(x.shape[1], D) for x in self.tgt])
        self.pos = nn.Embedding(cfg.max_len, D)
        layer = nn.TransformerEncoderLayer(D, cfg.n_heads, 4 * D, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)

    def forward(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = sum(p(f[items]) for p, f in zip(self.proj, self.src)) + self.pos.weight[: items.shape[1]]
        h = self.encoder(x, src_key_padding_mask=~mask)
        u = F.normalize((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
        v = F.normalize(sum(p(f) for p, f in zip(self.item_proj, self.tgt)), dim=-1)
        return 20.0 * u @ v.T


def build(args: argparse.Namespace, image: bool, device: torch.device):
    g = torch.Generator().manual_seed(0)
    n_src = args.items
    modalities = {"text": 384, "image": 1280} if image else {"text": 384}
    fusion = FusionConfig(modalities, ["src", "tgt"], id_items={"tgt": args.items}, kind="transformer", dim=128, n_layers=2,
                          n_heads=4, pooling="attention")
    model = InterestModel(InterestConfig(fusion, {"tgt": TargetConfig(args.items)})).to(device)
    src = {m: torch.randn(n_src, d, generator=g).to(device) for m, d in modalities.items()}
    tgt = {m: torch.randn(args.items, d, generator=g).to(device) for m, d in modalities.items()}
    present = {"image": (torch.rand(n_src, generator=g) > 0.2).to(device)} if image else None
    model.set_item_features("src", src, present)
    model.set_item_features("tgt", tgt)
    ref = StockReference(src, tgt, fusion).to(device)
    items = torch.randint(0, n_src, (args.batch, args.length), generator=g).to(device)
    mask = torch.ones(args.batch, args.length, dtype=torch.bool, device=device)
    target = torch.randint(0, args.items, (args.batch,), generator=g).to(device)
    return model, ref, items, mask, target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="bfloat16 runs under torch.autocast")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--length", type=int, default=50)
    ap.add_argument("--items", type=int, default=20_000, help="target items (and source items)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"dtype {args.dtype}, batch {args.batch} x length {args.length}, {args.items} target items, "
          f"torch {torch.__version__}\n")
    print("| config | step | ours (histories/s) | stock torch (histories/s) | ours / stock |")
    print("|---|---|---|---|---|")
    for image in (False, True):
        model, ref, items, mask, target = build(args, image, device)

        def train_ours():
            model.train()
            model.zero_grad(set_to_none=True)
            with autocast():
                loss = F.cross_entropy(model(items, mask, "src", "tgt").float(), target)
            loss.backward()

        def train_ref():
            ref.train()
            ref.zero_grad(set_to_none=True)
            with autocast():
                loss = F.cross_entropy(ref(items, mask).float(), target)
            loss.backward()

        def score_ours():
            model.eval()
            with torch.inference_mode(), autocast():
                model.score(items, mask, "src", "tgt")

        def score_ref():
            ref.eval()
            with torch.inference_mode(), autocast():
                ref(items, mask)

        name = "text + image (+ ids)" if image else "text (+ ids)"
        for step, ours, stock in (("fwd+bwd", train_ours, train_ref), ("score", score_ours, score_ref)):
            t = interleaved({"ours": ours, "stock": stock}, args.repeats, sync)
            print(f"| {name} | {step} | {args.batch / t['ours']:.0f} | {args.batch / t['stock']:.0f} "
                  f"| {t['stock'] / t['ours']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
