"""The prepared GPU check: encoders and fusion training in fp32 vs bf16, and the GPU tests.

One run writes one Markdown table (``--out``, written to a temporary file and renamed):

* encoder throughput, fp32 and bf16 (``torch.autocast``), items/s with preprocessing
  included (``Encoder.encode``), for MiniLM (``sentence-transformer``), the decoder LLM
  (``llm-text``; "not available" when this checkout has no such encoder) and
  EfficientNet-Lite0 (the five real photos of ``media_samples``, cycled); for text, the
  achieved TFLOP/s (2 x linear-layer weights x real tokens: attention scores left out,
  small for titles) and its share of the GPU's dense bf16 peak; the cosine of the bf16
  vectors to the fp32 ones;
* fusion training (``training.train``, the public API) on the synthetic world of
  ``tests/synthetic.py``: steps/s in fp32 and with ``mixed_precision="bf16"``, and the
  per-epoch training loss of both (they match when no epoch differs by more than 5%);
* fine-tuning the text encoder (``training.finetune``, what ``mmi finetune`` runs): MiniLM
  on Amazon Art -> Office with 20% cold items (imported from ``amazon_art_office`` into a
  temporary folder), a fixed number of steps in fp32 and in bf16 (bf16 autocast on CUDA
  only: "n/a" on the CPU); steps/s and the validation NDCG@10 (all held-out items, the
  cold ones over the whole catalog and among the cold items) after those steps, against the
  frozen encoder's; ``--tiny``: a random 2-layer
  BERT on the topic world of ``tests/finetune_world.py``;
* the closed-form fit of the default (linear) model, which runs on the CPU whatever
  ``--device``: seconds on its approximate path (``benchmarks/bench_fit_scale.py``'s world);
* the tests marked ``gpu`` (``pytest -m gpu``): how many passed, failed, skipped.

``--device cpu`` runs it all on the CPU (CUDA hidden); ``--tiny`` shrinks every size so a
CPU run takes seconds (the default test does that). On one H200 the full run is sized to
finish in well under 8 minutes.

    bash benchmarks/gpu.sh                       # on the GPU machine
    bash benchmarks/gpu.sh --device cpu --tiny   # anywhere, seconds
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMI_SHARED_DATA", REPO.parent / "shared" / "data"))

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets.
BF16_PEAK = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0,
             "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="CI-sized: a few items and steps")
    ap.add_argument("--out", default="gpu-bench.md", help="the Markdown table")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: "
                                                      "looked up by its name)")
    ap.add_argument("--skip-tests", action="store_true", help="do not run pytest -m gpu")
    return ap.parse_args(argv)


def sizes(tiny: bool) -> dict[str, int]:
    if tiny:
        return dict(texts=32, text_batch=16, llm_texts=8, llm_batch=4, images=8, image_batch=4,
                    users=300, epochs=2, steps=6, rounds=1, fit_users=2000, fit_items=2000, exact_rows=500,
                    landmarks=128, ft_steps=10, ft_batch=16)
    return dict(texts=16384, text_batch=512, llm_texts=4096, llm_batch=128, images=2048,
                image_batch=128, users=20000, epochs=3, steps=200, rounds=3, fit_users=20000, fit_items=50000,
                exact_rows=4000, landmarks=1024, ft_steps=200, ft_batch=64)


def texts(n: int) -> list[str]:
    """``n`` real item texts: Amazon Arts titles + attributes (cycled past 18,639)."""
    import pandas as pd

    from encoders.text import combine_text_fields

    items = pd.read_csv(DATA / "amazon_art_office" / "item_listA_F.csv", dtype=str,
                        keep_default_na=False, nrows=min(n, 18639))
    got = [combine_text_fields(r, ["item_title", "item_attribute"]) for r in items.to_dict("records")]
    got = [t for t in got if t]
    return [got[i % len(got)] for i in range(n)]


def images(n: int) -> list[str]:
    files = sorted(str(p) for p in (DATA / "media_samples" / "images").iterdir())
    return [files[i % len(files)] for i in range(n)]


def linear_weights(enc) -> int:
    """Weights of the linear layers a forward pass multiplies by (an LM head left out)."""
    import torch

    return sum(m.weight.numel() for name, m in enc.named_modules()
               if isinstance(m, torch.nn.Linear) and "lm_head" not in name)


def real_tokens(enc, items: list[str], batch: int) -> int | None:
    total = 0
    for s in range(0, len(items), batch):
        b = enc.collate(items[s:s + batch])
        if not isinstance(b, Mapping) or "attention_mask" not in b:
            return None
        total += int(b["attention_mask"].sum())
    return total


def timed_encode(enc, items: list, batch: int, device: str, bf16: bool, rounds: int):
    """(best seconds of ``rounds`` calls after a warm-up, the vectors)."""
    import torch

    def run():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            return enc.encode(items, batch_size=batch, device=device, show_progress_bar=False)

    run()
    best, out = float("inf"), None
    for _ in range(rounds):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = run()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_encoder(label: str, name: str, items: list, batch: int, device: str, rounds: int,
                  peak: float | None, kwargs: dict | None = None) -> list[str]:
    import numpy as np

    from encoders import create_encoder, list_encoders

    if name not in list_encoders():
        return [label, "not available", "not available", "", f"no encoder {name!r} registered in this checkout"]
    enc = create_encoder(name, device=device, **(kwargs or {}))
    t32, v32 = timed_encode(enc, items, batch, device, False, rounds)
    t16, v16 = timed_encode(enc, items, batch, device, True, rounds)
    cos = (v32 * v16).sum(1) / np.linalg.norm(v32, axis=1) / np.linalg.norm(v16, axis=1)
    notes = [f"{len(items)} items, batch {batch}", f"cosine bf16 vs fp32 {cos.mean():.5f} (min {cos.min():.5f})"]
    if enc.modality == "text":
        tokens = real_tokens(enc, items, batch)
        if tokens:
            flops = 2 * linear_weights(enc) * tokens
            for tag, t in (("fp32", t32), ("bf16", t16)):
                tf = flops / t / 1e12
                share = f" = {100 * tf / peak:.1f}% of the {peak:.0f} TFLOP/s bf16 peak" if peak else ""
                notes.append(f"{tag} {tf:.2f} TFLOP/s{share}")
    n = len(items)
    return [label, f"{n / t32:.1f} items/s", f"{n / t16:.1f} items/s", f"{t32 / t16:.2f}", "; ".join(notes)]


def bench_training(s: dict[str, int], device: str, work: Path) -> list[str]:
    sys.path.insert(0, str(REPO / "tests"))
    from synthetic import synthetic_task

    from multimodal_interest.training import TrainConfig, train

    task, features = synthetic_task(n_users=s["users"], n_items=(s["users"] // 4, s["users"] // 5),
                                    width=384 if not s["users"] < 1000 else 16)
    runs = {}
    for precision in ("no", "bf16"):
        config = TrainConfig(kind="transformer", dim=128 if s["users"] >= 1000 else 32, n_layers=1, batch_size=256 if
                             s["users"] >= 1000 else 64, epochs=s["epochs"], patience=s["epochs"],
                             min_epoch_steps=s["steps"], dropout=0.0, modality_dropout=0.0,
                             mixed_precision=precision, seed=0)
        result = train(task, features, config, work / precision, resume=False, progress_bar=False)
        last = result.history[-1]
        runs[precision] = (last["step"] / last["seconds"], [row["loss"] for row in result.history])
    (f32, l32), (f16, l16) = runs["no"], runs["bf16"]
    worst = max(abs(a - b) / abs(a) for a, b in zip(l32, l16))
    verdict = "match" if worst <= 0.05 else "DIFFER"
    curve = lambda losses: ", ".join(f"{v:.3f}" for v in losses)  # noqa: E731
    return ["fusion training (synthetic world)", f"{f32:.1f} steps/s", f"{f16:.1f} steps/s", f"{f16 / f32:.2f}",
            f"{s['users']} users, {s['epochs']} epochs of {s['steps']}+ steps; "
            f"loss per epoch fp32 [{curve(l32)}], bf16 [{curve(l16)}]: max difference "
            f"{100 * worst:.1f}%, {verdict}"]


def finetune_world(tiny: bool, work: Path):
    """(task, item texts, base encoder spec): the tiny topic world, or Amazon Art -> Office."""
    from multimodal_interest.data.dataset import CrossPlatformDataset
    from multimodal_interest.data.importers import import_dataset
    from multimodal_interest.data.protocols import Protocol
    from multimodal_interest.training.finetune import item_texts

    if tiny:
        sys.path.insert(0, str(REPO / "tests"))
        from finetune_world import tiny_encoder, words, write_world

        dataset = CrossPlatformDataset.load(write_world(work / "topics"))
        task, base = dataset.cold_start("src", "tgt", "published"), f"finetuned:{tiny_encoder(work / 'base', words(6, 12))}"
    else:
        dataset = CrossPlatformDataset.load(import_dataset("amazon-art-office", DATA / "amazon_art_office",
                                                           work / "amazon"))
        task, base = dataset.cold_start("art", "office", "published"), "sentence-transformer"
    task = Protocol(cold_items=0.2).apply(task)
    return task, {p: item_texts(dataset, p) for p in task.platforms}, base


def frozen_score(task, texts, base: str, batch: int) -> str:
    """The base encoder's validation NDCG@10 (all / cold), scored as fine-tuning scores."""
    from multimodal_interest.parallel import accelerator_for
    from multimodal_interest.training.finetune import FinetuneConfig
    from multimodal_interest.training.finetune.model import load_base
    from multimodal_interest.training.finetune.tokens import ItemTokens
    from multimodal_interest.training.finetune.validation import Validation

    defaults = FinetuneConfig()
    st, _ = load_base(base)
    st.max_seq_length = defaults.max_seq_length
    acc = accelerator_for("no")
    tokens = {p: ItemTokens.build(st.preprocess, texts[p], st.tokenizer.pad_token_id or 0) for p in task.platforms}
    valid = Validation(task, tokens, defaults.max_len, batch)
    score = valid.score(acc, acc.prepare(st), acc.prepare(*valid.loaders()))
    return f"{score.ndcg10:.4f} / {score.cold_ndcg10:.4f} / {score.cold_among_cold_ndcg10:.4f}"


def bench_finetune(s: dict[str, int], device: str, tiny: bool, work: Path) -> list[str]:
    from multimodal_interest.training.finetune import FinetuneConfig, finetune

    task, texts, base = finetune_world(tiny, work)
    cells, notes = [], []
    for precision in ("no", "bf16"):
        if precision == "bf16" and device != "cuda":
            cells.append("n/a (CUDA only)")
            continue
        config = FinetuneConfig(epochs=1, epoch_steps=s["ft_steps"], batch_size=s["ft_batch"], mixed_precision=precision,
                                lr=1e-3 if tiny else 2e-5, eval_batch_size=512)
        result = finetune(task, texts, base, config, work / f"ft-{precision}", resume=False, progress_bar=False)
        row = result.history[-1]
        cells.append(f"{row['step'] / row['seconds']:.2f} steps/s")
        notes.append(f"{'fp32' if precision == 'no' else precision}: {row['train_items_per_s']:.0f} items/s, "
                     f"NDCG@10 all / cold / cold among cold {row['valid_ndcg10']:.4f} / "
                     f"{row['valid_cold_ndcg10']:.4f} / {row['valid_cold_among_cold_ndcg10']:.4f}, "
                     f"validation {row['valid_seconds']:.0f} s")
    ratio = (f"{float(cells[1].split()[0]) / float(cells[0].split()[0]):.2f}" if "steps/s" in cells[1] else "")
    what = "tiny BERT, topic world" if tiny else "MiniLM, Amazon Art -> Office, 20% cold items"
    return [f"fine-tuning the text encoder ({what})", *cells, ratio,
            f"{s['ft_steps']} steps of {s['ft_batch']} users; frozen encoder NDCG@10 all / cold / cold among cold "
            f"{frozen_score(task, texts, base, 512)}; " + "; ".join(notes)]


def bench_closed_form(s: dict[str, int]) -> list[str]:
    """The default model's closed-form fit (CPU, numpy and torch) on the ids-only synthetic
    world of ``benchmarks/bench_fit_scale.py``, on its approximate path (more fit rows than
    ``exact_rows``)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_fit_scale import world

    from multimodal_interest.training import TrainConfig
    from multimodal_interest.training.closed_form import fit_closed_form

    task, features = world(s["fit_users"], max(100, s["fit_users"] // 50), s["fit_items"])
    config = TrainConfig(exact_rows=s["exact_rows"], landmarks=s["landmarks"])
    result = fit_closed_form(task, features, config)
    fit = result.info
    return ["closed-form fit (CPU, synthetic ids-only world)", f"{result.seconds:.1f} s", "", "",
            f"{fit['fit_rows']:,} fit rows, {s['fit_items']:,} items per platform, {fit['path']} path, "
            f"search on {fit['search_rows']:,} rows, {fit.get('landmarks', '-')} landmarks, "
            f"{os.cpu_count()} cores; validation NDCG@10 {result.valid_ndcg10:.4f}"]


def gpu_tests(device: str) -> list[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    t = time.perf_counter()
    files = [str(p.relative_to(REPO)) for p in sorted((REPO / "tests").glob("test_*.py"))
             if "mark.gpu" in p.read_text()]  # collecting only these keeps the run short
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                           *files], cwd=REPO, env=env, capture_output=True, text=True)
    tail = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", tail)}
    status = "ok" if proc.returncode in (0, 5) and not counts.get("failed") else f"exit {proc.returncode}"
    return ["tests marked gpu (pytest -m gpu)", "", "", "",
            f"{tail.strip('= ')} in {time.perf_counter() - t:.0f} s ({status}; CUDA "
            f"{'hidden' if device == 'cpu' else 'visible'})"]


def device_line(device: str) -> tuple[str, float | None]:
    import torch

    if device == "cpu":
        return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}", None
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in BF16_PEAK.items() if k in name), None)
    return f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}", peak


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch starts: training runs on the CPU too
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device here; use --device cpu (with --tiny for a quick run)", file=sys.stderr)
        return 2
    s = sizes(args.tiny)
    where, peak = device_line(args.device)
    peak = args.peak_tflops or peak
    start = time.perf_counter()
    rows = [
        bench_encoder("MiniLM-L6 (sentence-transformer)", "sentence-transformer", texts(s["texts"]),
                      s["text_batch"], args.device, s["rounds"], peak),
        bench_encoder("SmolLM2-135M (llm-text)", "llm-text", texts(s["llm_texts"]), s["llm_batch"],
                      args.device, s["rounds"], peak),
        bench_encoder("EfficientNet-Lite0", "efficientnet-lite0", images(s["images"]), s["image_batch"],
                      args.device, s["rounds"], peak),
    ]
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as work:
        rows.append(bench_training(s, args.device, Path(work)))
        rows.append(bench_finetune(s, args.device, args.tiny, Path(work)))
    rows.append(bench_closed_form(s))
    if not args.skip_tests:
        rows.append(gpu_tests(args.device))
    command = "bash benchmarks/gpu.sh " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"`{command.strip()}` on {where}, {datetime.date.today()}, "
             f"{time.perf_counter() - start:.0f} s{' (--tiny sizes)' if args.tiny else ''}", "",
             "| what | fp32 | bf16 | bf16 / fp32 | notes |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
