"""Text encoders side by side on Amazon Art/Office: the LLM encoder, MiniLM, mpnet.

  python benchmarks/bench_text_encoders.py fit-default
      fit the shipped whitening of llm-text (encoders/whitening/smollm2-135m-{last,mean}.safetensors)
      on 2,048 item texts: 1,024 drawn from each catalog with seed 0.
  python benchmarks/bench_text_encoders.py speed [--n 256] [--batch 32]
      encode items/s of each encoder on the same Art texts, interleaved rounds, ratio to MiniLM.
  python benchmarks/bench_text_encoders.py knn --store-root DIR [--users 300] [--candidates 2000]
      content-kNN NDCG@10 per direction on a fixed subset (see `knn_subset`), each encoder's
      vectors written as an embedding store under DIR (resumable: rerun to continue).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import SHARED_DATA, amazon_item_texts, machine, markdown_table  # noqa: E402
from encoders import create_encoder  # noqa: E402
from encoders.text import combine_text_fields  # noqa: E402

ENCODERS = {  # label -> (registry name, options)
    "MiniLM (sentence-transformer)": ("sentence-transformer", {}),
    "mpnet": ("mpnet", {}),
    "SmolLM2-135M llm-text last": ("llm-text", {"pooling": "last"}),
    "SmolLM2-135M llm-text mean": ("llm-text", {"pooling": "mean"}),
}
ART_OFFICE_SPLIT = 18639  # item ids below are art, the rest office


def item_texts() -> tuple[list[str], list[str]]:
    """(item ids, text) of all 38,396 items, text = title. attribute (the store's rule)."""
    df = amazon_item_texts()
    texts = [combine_text_fields({"t": t, "a": a}, ["t", "a"]) for t, a in zip(df["title"], df["attribute"])]
    return list(df["item_id"]), texts


def fit_default(batch: int) -> None:
    from encoders.llm import WHITENING_DIR, LLMTextEncoder, fit_whitening

    ids, texts = item_texts()
    rng = np.random.default_rng(0)
    art = [i for i, x in enumerate(ids) if int(x) < ART_OFFICE_SPLIT]
    office = [i for i, x in enumerate(ids) if int(x) >= ART_OFFICE_SPLIT]
    pick = sorted(rng.choice(art, 1024, replace=False).tolist() + rng.choice(office, 1024, replace=False).tolist())
    chosen = [texts[i] for i in pick if texts[i]]
    for pooling in ("last", "mean"):
        t0 = time.perf_counter()
        enc = LLMTextEncoder(pooling=pooling, whitening="none", device="cpu")
        out = fit_whitening(enc, chosen, WHITENING_DIR / f"smollm2-135m-{pooling}.safetensors", batch_size=batch)
        print(f"{out}: {len(chosen)} texts, {time.perf_counter() - t0:.0f} s", flush=True)


def test_users(n_users: int, seed: int = 0) -> list[tuple[list[int], int]]:
    """(history item ids, target item id) pairs of ``n_users`` test users drawn with ``seed``:
    each test user has two lines, one ending in an art target and one in an office target."""
    lines = (SHARED_DATA / "amazon_art_office" / "seq_format" / "testdata_new.txt").read_text().splitlines()
    by_user: dict[str, list[tuple[list[int], int]]] = {}
    for line in lines:
        uid, _, *events = line.rstrip("\t").split("\t")
        items = [int(e.split("|")[0]) for e in events]
        by_user.setdefault(uid, []).append((items[:-1], items[-1]))
    users = sorted(by_user)
    pick = np.random.default_rng(seed).choice(len(users), n_users, replace=False)
    return [row for i in sorted(pick) for row in by_user[users[i]]]


def knn_subset(n_users: int, n_candidates: int) -> dict[str, dict]:
    """Per direction: queries (source history items), targets, and a shared candidate pool of
    the target platform: every drawn user's target plus random items up to ``n_candidates``."""
    rows = test_users(n_users)
    rng = np.random.default_rng(1)
    art = lambda i: i < ART_OFFICE_SPLIT  # noqa: E731
    out = {}
    for src, tgt, in_src in (("art", "office", art), ("office", "art", lambda i: not art(i))):
        pairs = [([i for i in hist if in_src(i)], t) for hist, t in rows if not in_src(t)]
        pairs = [(h, t) for h, t in pairs if h]
        pool = sorted({t for _, t in pairs})
        all_tgt = np.arange(ART_OFFICE_SPLIT, 38396) if tgt == "office" else np.arange(ART_OFFICE_SPLIT)
        rest = np.setdiff1d(all_tgt, pool)
        pool += rng.choice(rest, n_candidates - len(pool), replace=False).tolist()
        out[f"{src}->{tgt}"] = {"pairs": pairs, "candidates": sorted(pool)}
    return out


def with_ci(ranks: np.ndarray, rounds: int = 2000) -> str:
    """NDCG@10 and its 95% bootstrap interval over users."""
    gains = np.where(ranks < 10, 1.0 / np.log2(ranks + 2), 0.0)
    boot = np.random.default_rng(0).choice(gains, (rounds, len(gains))).mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return f"{gains.mean():.4f} [{lo:.4f}, {hi:.4f}]"


def content_knn(vectors: np.ndarray, row: dict[int, int], task: dict) -> np.ndarray:
    """Rank the candidates by cosine to the normalised mean of the user's source item vectors."""
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cand = np.array([row[i] for i in task["candidates"]])
    pos = {item: k for k, item in enumerate(task["candidates"])}
    ranks = []
    for hist, target in task["pairs"]:
        q = v[[row[i] for i in hist]].mean(0)
        scores = v[cand] @ (q / np.linalg.norm(q))
        ranks.append(int((scores > scores[pos[target]]).sum()))
    return np.array(ranks)  # 0-based rank of each user's target among the candidates


def encode_cached(label: str, texts: list[str], folder: Path, batch: int) -> tuple[np.ndarray, float]:
    """Vectors of ``texts`` by encoder ``label`` (saved as .npy; a rerun reads them) and items/s."""
    from encoders.llm import WHITENING_DIR  # noqa: F401  (the import checks the [llm] extra)

    path, info = folder / f"{label}.npy", folder / f"{label}.json"
    if path.is_file() and info.is_file():
        return np.load(path), json.loads(info.read_text())["items_per_s"]
    name, options = ENCODERS[label]
    if name == "llm-text":
        options = {**options, "whitening": "none"}  # raw states; the shipped transform is applied after
    enc = create_encoder(name, device="cpu", **options)
    t0 = time.perf_counter()
    vec = enc.encode(texts, batch_size=batch)
    rate = len(texts) / (time.perf_counter() - t0)
    tmp = folder / f".{label}.npy"
    np.save(tmp, vec)
    tmp.replace(path)
    info.write_text(json.dumps({"items_per_s": rate, "n": len(texts), "fingerprint": enc.fingerprint}))
    return vec, rate


def shipped_whitening(pooling: str) -> tuple[np.ndarray, np.ndarray]:
    from safetensors.numpy import load_file

    from encoders.llm import WHITENING_DIR

    w = load_file(str(WHITENING_DIR / f"smollm2-135m-{pooling}.safetensors"))
    return w["mean"], w["transform"]


def knn(store_root: Path, n_users: int, n_candidates: int, batch: int, labels: list[str]) -> None:
    ids, texts = item_texts()
    tasks = knn_subset(n_users, n_candidates)
    needed = sorted({i for t in tasks.values() for h, tg in t["pairs"] for i in [*h, tg]}
                    | {i for t in tasks.values() for i in t["candidates"]})
    row = {item: k for k, item in enumerate(needed)}
    assert all(ids[i] == str(i) for i in needed)  # item id i is row i of the two catalogs
    subset = [texts[i] for i in needed]
    subset = [t if t else "(no title)" for t in subset]  # the one empty office title
    store_root.mkdir(parents=True, exist_ok=True)
    print(f"{len(needed)} items; " + ", ".join(f"{k}: {len(t['pairs'])} users, {len(t['candidates'])} "
                                               f"candidates" for k, t in tasks.items()), flush=True)
    results = []
    for label in labels:
        vec, rate = encode_cached(label, subset, store_root, batch)
        variants = [(label, vec)]
        if ENCODERS[label][0] == "llm-text":
            mean, transform = shipped_whitening(ENCODERS[label][1]["pooling"])
            variants = [(label + " (raw states)", vec), (label + " (whitened)", (vec - mean) @ transform)]
        for name, v in variants:
            scores = {k: with_ci(content_knn(v, row, t)) for k, t in tasks.items()}
            results.append([name, *scores.values(), f"{rate:.1f}"])
            print(results[-1], flush=True)
    header = ["encoder", *(f"content-kNN NDCG@10 {k} [95%]" for k in tasks), "items/s (encoding this subset)"]
    table = markdown_table(header, results)
    (store_root / "knn.md").write_text(f"{datetime.date.today()}, {machine()}\n\n{table}\n")
    print(table)


def speed(n: int, batch: int, rounds: int, labels: list[str]) -> None:
    """items/s of each encoder on the same ``n`` Art texts, rounds interleaved, ratio to MiniLM."""
    _, texts = item_texts()
    sample = [texts[i] for i in np.random.default_rng(2).choice(ART_OFFICE_SPLIT, n, replace=False)]
    encs = {label: create_encoder(ENCODERS[label][0], device="cpu", **ENCODERS[label][1]) for label in labels}
    times: dict[str, list[float]] = {label: [] for label in labels}
    for label, enc in encs.items():
        enc.encode(sample[:batch], batch_size=batch)  # warm-up
    for _ in range(rounds):
        for label, enc in encs.items():
            t0 = time.perf_counter()
            enc.encode(sample, batch_size=batch)
            times[label].append(time.perf_counter() - t0)
    ref = n / min(times[labels[0]])
    rows = [[label, f"{n / min(t):.1f}", f"{n / min(t) / ref:.3f}"] for label, t in times.items()]
    print(f"{datetime.date.today()}, {machine()}, {n} Art texts, batch {batch}, best of {rounds} interleaved rounds")
    print(markdown_table(["encoder", "items/s", f"ratio to {labels[0]}"], rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit-default")
    fit.add_argument("--batch", type=int, default=32)
    k = sub.add_parser("knn")
    k.add_argument("--store-root", type=Path, required=True)
    k.add_argument("--users", type=int, default=200)
    k.add_argument("--candidates", type=int, default=1000)
    k.add_argument("--batch", type=int, default=32)
    k.add_argument("--encoders", default=",".join(ENCODERS), help="comma-separated labels")
    sp = sub.add_parser("speed")
    sp.add_argument("--n", type=int, default=128)
    sp.add_argument("--batch", type=int, default=32)
    sp.add_argument("--rounds", type=int, default=2)
    sp.add_argument("--encoders", default="MiniLM (sentence-transformer),mpnet,SmolLM2-135M llm-text last")
    args = parser.parse_args(argv)
    if args.command == "fit-default":
        fit_default(args.batch)
    elif args.command == "knn":
        knn(args.store_root, args.users, args.candidates, args.batch, args.encoders.split(","))
    else:
        speed(args.n, args.batch, args.rounds, args.encoders.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
