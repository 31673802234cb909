"""Encoding throughput of the toolkit's encoders against their bare reference, in one run.

* text: ``create_encoder("sentence-transformer").encode`` vs ``SentenceTransformer.encode``
  on the same real item texts (Amazon Arts titles + attributes), same model object, batch
  size and device;
* image: ``create_encoder("efficientnet-lite0").encode(paths)`` (decoding included) vs the
  bare timm network on already decoded, normalised tensors, and vs the bare network with the
  same preprocessing done the plain way (PIL + torchvision transforms, serially: decoding
  included in both: the 0.95x goal is against this one);
* audio: ``create_encoder("crepe").encode(paths)`` (reading, resampling, framing included)
  vs the bare CREPE network on already computed frames; also the toolkit as it was before
  the resampling filter was cached (rebuilt for every clip), same run.

``num_workers``: ``0`` loads every batch in the calling thread (what the toolkit did on
this 2-CPU machine before), ``auto`` is the default (here: one thread loading the next
batch while the network runs), ``N`` decoding processes.

Runs are interleaved (reference, toolkit, then toolkit, reference, ...) and the median of each is
reported with the ratio toolkit / reference (goal: >= 0.95). Prints a Markdown table.

    PYTHONPATH=. python benchmarks/bench_encoders.py [--texts 256] [--rounds 8] [--parts image crepe-tiny]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable
from unittest import mock

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import encoders.audio  # noqa: E402
from encoders import create_encoder  # noqa: E402
from encoders.audio import CREPE_RATE, crepe_frames, read_audio  # noqa: E402
from encoders.text import combine_text_fields  # noqa: E402

DATA = Path(os.environ.get("MMI_SHARED_DATA", REPO.parent / "shared" / "data"))
PARTS = ["text", "image", "crepe-tiny", "crepe-full"]


def interleaved(fns: dict[object, Callable[[int], object]], rounds: int) -> dict[object, list[float]]:
    """Run every function once per round (round r gets argument r), in an order that rotates
    between rounds, after one warm-up; each function's seconds per round."""
    names = list(fns)
    for fn in fns.values():
        fn(0)
    times: dict[object, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            fns[name](r)
            times[name].append(time.perf_counter() - t)
    return times


def against(times: dict[object, list[float]], reference: object) -> dict[object, tuple[float, float]]:
    """Per function, (median seconds per call, median over rounds of ``reference``'s time / its
    time): the ratio compares runs made moments apart, so load from other processes mostly
    cancels."""
    ref = times[reference]
    return {k: (statistics.median(v), statistics.median(a / b for a, b in zip(ref, v)))
            for k, v in times.items()}


def _workers(label: str) -> int | None:
    return None if label == "auto" else int(label)


def _uncached_resampler(orig_rate: int, new_rate: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The resampling before the filter was cached (``torchaudio.functional.resample``)."""
    import torchaudio.functional

    return lambda wave: torchaudio.functional.resample(wave, orig_rate, new_rate)


def bench_text(n: int, batch: int, rounds: int) -> list[tuple]:
    import pandas as pd

    items = pd.read_csv(DATA / "amazon_art_office" / "item_listA_F.csv", dtype=str, keep_default_na=False)
    texts = [combine_text_fields(r, ["item_title", "item_attribute"])
             for r in items.head(n * rounds).to_dict("records")]
    chunk = lambda r: texts[r * n:(r + 1) * n]  # noqa: E731
    enc = create_encoder("sentence-transformer", device="cpu")
    ref = lambda r: enc.net.encode(chunk(r), batch_size=batch, show_progress_bar=False)  # noqa: E731
    ours = lambda r: enc.encode(chunk(r), batch_size=batch, show_progress_bar=False)  # noqa: E731
    assert np.allclose(ref(0), ours(0), atol=1e-5), "toolkit vectors differ from SentenceTransformer's"
    t = against(interleaved({"ref": ref, "ours": ours}, rounds), "ref")
    return [("text", "sentence-transformer (MiniLM-L6)", "SentenceTransformer.encode", n, batch,
             n / t["ref"][0], n / t["ours"][0], t["ours"][1], 0)]


def bench_image(n: int, batch: int, rounds: int, workers: list[int]) -> list[tuple]:
    """Two references: the bare network on tensors decoded beforehand, and the bare network
    with the same preprocessing written the plain way (PIL, torchvision transforms, one
    image after another): what a user of the raw model runs, the one the goal is against."""
    from PIL import Image
    from torchvision import transforms as T

    files = sorted((DATA / "media_samples" / "images").iterdir())
    paths = [str(files[i % len(files)]) for i in range(n)]
    enc = create_encoder("efficientnet-lite0", device="cpu").eval()
    pixels = enc.collate([enc.load_item(p) for p in paths])  # [n, H, W, 3] uint8
    x = (pixels.permute(0, 3, 1, 2).float() - enc.pixel_mean) / enc.pixel_std  # channels-last
    pre = enc.preprocess
    plain = T.Compose([T.Resize(pre.resize, interpolation=T.InterpolationMode(pre.interpolation)),
                       T.CenterCrop(pre.crop), T.PILToTensor()])

    def forward(images: torch.Tensor) -> None:
        enc.net.forward_head(enc.net.forward_features(images), pre_logits=True)

    def ref(_: int) -> None:
        with torch.inference_mode():
            for s in range(0, n, batch):
                forward(x[s:s + batch])

    def ref_decoding(_: int) -> None:
        with torch.inference_mode():
            for s in range(0, n, batch):
                images = torch.stack([plain(Image.open(p).convert("RGB")) for p in paths[s:s + batch]])
                forward((images.float() - enc.pixel_mean) / enc.pixel_std)

    refs = {"ref": "bare timm net, decoded tensors", "ref+decoding": "bare timm net, plain decoding included"}
    fns: dict[object, Callable[[int], object]] = {"ref": ref, "ref+decoding": ref_decoding}
    for w in workers:
        fns[w] = lambda _, w=w: enc.encode(paths, batch_size=batch, num_workers=_workers(w))
    times, rows = interleaved(fns, rounds), []
    for key, label in refs.items():
        t = against(times, key)
        rows += [("image", "efficientnet-lite0 (5 real photos, cycled)", label, n, batch,
                  n / t[key][0], n / t[w][0], t[w][1], w) for w in workers]
    return rows


def bench_audio(capacity: str, n: int, batch: int, rounds: int, workers: list[int]) -> list[tuple]:
    audio = DATA / "media_samples" / "audio"
    files = sorted(str(p) for p in audio.iterdir() if p.is_file() and p.suffix != ".md")
    paths = [files[i % len(files)] for i in range(n)]
    enc = create_encoder("crepe", capacity=capacity, device="cpu").eval()
    frames = [crepe_frames(read_audio(p, CREPE_RATE), enc.hop) for p in paths]

    def ref(_: int) -> None:
        with torch.inference_mode():
            for s in range(0, len(frames), batch):
                group = frames[s:s + batch]
                emb = torch.cat([enc.net.embed(c).flatten(1) for c in torch.cat(group).split(512)])
                torch.stack([e.mean(0) for e in emb.split([len(f) for f in group])])

    def before(_: int) -> None:  # serial, the resampling filter rebuilt for every clip
        with mock.patch.object(encoders.audio, "resampler", _uncached_resampler):
            enc.encode(paths, batch_size=batch, num_workers=0)

    fns: dict[object, Callable[[int], object]] = {"ref": ref, "0, filter per clip (before)": before}
    for w in workers:
        fns[w] = lambda _, w=w: enc.encode(paths, batch_size=batch, num_workers=_workers(w))
    t = against(interleaved(fns, rounds), "ref")
    workers = list(fns)[1:]
    seconds = sum(len(f) for f in frames) * enc.hop / CREPE_RATE
    return [("audio", f"crepe {capacity} ({len(files)} real clips cycled, {seconds:.0f} s)",
             "bare CREPE net, framed clips", len(paths), batch, len(paths) / t["ref"][0],
             len(paths) / t[w][0], t[w][1], w) for w in workers]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=256, help="texts per round")
    ap.add_argument("--images", type=int, default=128, help="images per call")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--clips", type=int, default=32, help="audio clips per call (8 files, cycled)")
    ap.add_argument("--audio-batch", type=int, default=8, help="clips per audio batch")
    ap.add_argument("--rounds", type=int, default=8, help="rounds for text (half for image, tiny CREPE)")
    ap.add_argument("--workers", nargs="+", default=["0", "auto"],
                    help="num_workers to try: 0 (all in the calling thread), auto (the "
                         "default: here one prefetch thread), N worker processes")
    ap.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS, help="what to measure")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = bench_text(args.texts, args.batch_size, args.rounds) if "text" in args.parts else []
    if "image" in args.parts:
        rows += bench_image(args.images, args.batch_size, max(2, args.rounds // 2), args.workers)
    if "crepe-tiny" in args.parts:
        rows += bench_audio("tiny", args.clips, args.audio_batch, max(2, args.rounds // 2), args.workers)
    if "crepe-full" in args.parts:
        rows += bench_audio("full", args.clips, args.audio_batch, 2, args.workers)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, device cpu, float32; ratio = median over rounds of "
          f"reference time / toolkit time\n")
    print("| modality | encoder | reference | items/call | batch | reference items/s | toolkit items/s "
          "| ratio | num_workers |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mod, name, ref, n, b, r, o, ratio, w in rows:
        print(f"| {mod} | {name} | {ref} | {n} | {b} | {r:.1f} | {o:.1f} | {ratio:.3f} | {w} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
