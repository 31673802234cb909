"""The Ray engine against the single-process one, in the same run.

1. ``embed``: a sample of the real Amazon Art + Office catalog (``--items`` of each, text
   through the default MiniLM encoder) embedded by the single-process job and by Ray with 1
   and 2 encoder actors (a local Ray of 2 CPUs): items/s end to end (encoder loading and
   actor start-up included, as a user waits for them) and the ratio to single-process; each
   Ray store against the single-process one (same ids, max |diff|, same fingerprints and
   content hashes, each row once).
2. ``fault``: the same Ray job with one encoder actor SIGKILLed after the first shard is in:
   the job finishes, every row once.
3. ``batch``: ``mmi recommend-batch`` on a small trained deployment (tests/serving_world.py):
   its rows against :class:`Recommender` (what ``mmi recommend`` prints) for ``--check-users``
   users, and the driver's peak memory (VmHWM of a fresh process) for 10k and 100k users.

    .venv/bin/python benchmarks/bench_ray.py --items 1000
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchmarks._common import SHARED_DATA, machine, markdown_table  # noqa: E402
from multimodal_interest.catalog import Catalog  # noqa: E402
from multimodal_interest.distributed import embed_catalog_ray, ray_session  # noqa: E402
from multimodal_interest.embed import embed_catalog, load_encoders  # noqa: E402
from multimodal_interest.store import EmbeddingStore  # noqa: E402

TEXT = {"text": "sentence-transformer"}
PLATFORMS = {"art": "item_listA_F.csv", "office": "item_listO_AA_F.csv"}


def catalogs(root: Path, n: int) -> dict[str, Path]:
    """The first ``n`` items of each platform's real catalog, as catalog files."""
    out = {}
    for platform, name in PLATFORMS.items():
        raw = pd.read_csv(SHARED_DATA / "amazon_art_office" / name, dtype=str, keep_default_na=False, nrows=n)
        out[platform] = root / f"{platform}.csv"
        pd.DataFrame({"item_id": raw["idAfter"], "title": raw["item_title"],
                      "attribute": raw["item_attribute"]}).to_csv(out[platform], index=False)
    return out


def cmdline(process) -> str:
    """A process's command line ("" once it has exited: a zombie, gone)."""
    import psutil

    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def shard_ids(store: EmbeddingStore, platform: str) -> list[str]:
    vs = store.get(platform, "text")
    return [i for p in vs.shards() for i in pq.read_table(p, columns=["item_id"])["item_id"].to_pylist()]


def compare(want: EmbeddingStore, got: EmbeddingStore) -> dict:
    out = {"same_ids": True, "max_diff": 0.0, "same_fingerprints": True, "same_hashes": True, "rows_once": True}
    for p in PLATFORMS:
        a, b = want.load(p, "text"), got.load(p, "text")
        out["same_ids"] &= sorted(a.ids) == sorted(b.ids)
        out["max_diff"] = max(out["max_diff"], float((a.vectors - got.load(p, "text", ids=a.ids).vectors).abs().max()))
        out["same_fingerprints"] &= want.fingerprints(p, "text") == got.fingerprints(p, "text")
        out["same_hashes"] &= want.get(p, "text").content_hashes() == got.get(p, "text").content_hashes()
        rows = shard_ids(got, p)
        out["rows_once"] &= len(rows) == len(set(rows)) == len(a.ids)
    return out


def bench_embed(root: Path, n: int) -> list[str]:
    cats = catalogs(root, n)
    items = 0
    t0 = time.perf_counter()
    local = EmbeddingStore(root / "local")
    encoders = load_encoders(TEXT)
    for p, path in cats.items():
        items += embed_catalog(Catalog.read(path), local, p, encoders, show_progress=False).modalities[0].encoded
    base = items / (time.perf_counter() - t0)
    rows = [["single process (`mmi embed`)", f"{base:.1f}", "1.00", "", "", "", ""]]
    for workers in (1, 2):
        store = EmbeddingStore(root / f"ray{workers}")
        t0 = time.perf_counter()
        for p, path in cats.items():
            embed_catalog_ray(Catalog.read(path), store, p, TEXT, workers=workers, show_progress=False)
        rate = items / (time.perf_counter() - t0)
        c = compare(local, store)
        rows.append([f"Ray, {workers} encoder actor(s)", f"{rate:.1f}", f"{rate / base:.2f}", c["same_ids"],
                     f"{c['max_diff']:.1e}", c["same_fingerprints"] and c["same_hashes"], c["rows_once"]])
        print(rows[-1], flush=True)
    fault = bench_fault(root, cats["art"], n)
    return [f"{items} items ({n} Art + {n} Office titles, MiniLM text), local Ray of 2 CPUs", "",
            markdown_table(["job", "items/s", "vs single", "same ids", "max |diff|",
                            "same fingerprints + hashes", "each row once"], rows), "", fault]


def bench_fault(root: Path, catalog: Path, n: int) -> str:
    store = EmbeddingStore(root / "fault")
    killed = []

    def kill_one():  # an encoder actor of this run's own local Ray
        while not killed:
            time.sleep(0.2)
            workers = [p for p in psutil.Process().children(recursive=True) if "EncodeActor" in cmdline(p)]
            if workers and any(store.root.rglob("shard-*")):
                os.kill(workers[0].pid, signal.SIGKILL)
                killed.append(len(list(store.root.rglob("shard-*"))))

    threading.Thread(target=kill_one, daemon=True).start()
    shard = max(1, n // 10)
    summary = embed_catalog_ray(Catalog.read(catalog), store, "art", TEXT, workers=2, shard_size=shard,
                                show_progress=False)
    rows = shard_ids(store, "art")
    return (f"fault: one of 2 encoder actors SIGKILLed after {killed[0] if killed else 'no'} of "
            f"{-(-n // shard)} shards were in; the job finished: {summary.modalities[0].encoded} encoded, "
            f"{len(rows)} rows, {len(set(rows))} distinct, of {n} items")


def bench_batch(root: Path, check_users: int, sizes: list[int]) -> list[str]:
    from multimodal_interest.bundle import Bundle
    from multimodal_interest import batch as rb
    from multimodal_interest.recommend import Recommender
    from serving_world import train_model, write_world

    dataset, store = write_world(root / "world")
    run = train_model(dataset, store, root / "run", epochs=1)
    Bundle.build(run, dataset, store).save(root / "bundle", ())
    rec = Recommender.load(root / "bundle")
    a_items = dataset.items["a"]["item_id"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    lines = []
    for n in [check_users, *sizes]:
        lengths = rng.integers(1, 9, n)
        users = np.repeat([f"u{i:07d}" for i in range(n)], lengths)
        pd.DataFrame({"user_id": users, "item_id": rng.choice(a_items, len(users))}).to_csv(root / f"h{n}.csv", index=False)
    # equality with Recommender (= mmi recommend) on the first check_users users
    out = root / "check"
    s = rb.Settings(rec.fingerprint, "b", 10, "a", "exact", 3, False, False)
    rb.recommend_batch(root / "bundle", root / f"h{check_users}.csv", out, s, 100, show_progress=False)
    got = pd.concat([pq.read_table(p).to_pandas() for p in sorted(out.glob("part-*.parquet"))])
    hist = pd.read_csv(root / f"h{check_users}.csv", dtype=str)
    same = 0
    for user, row in zip(got["user_id"], got.itertuples()):
        h = hist.loc[hist["user_id"] == user, "item_id"].tolist()
        r = rec.recommend(h, platform="b", k=10, source="a", explain=3)
        u = rec.export_interest(h, source="a")["vector"]
        same += (list(row.item_ids) == [x.item_id for x in r.items]
                 and np.array_equal(np.asarray(row.scores, np.float32), np.float32([x.score for x in r.items]))
                 and np.array_equal(np.asarray(row.interest, np.float32), np.float32(u))
                 and [[c["item_id"] for c in b] for b in row.because] == [[c.item_id for c in x.because] for x in r.items])
    lines.append(f"recommend-batch vs Recommender.recommend/export_interest (what `mmi recommend` prints), "
                 f"k=10, explain=3: {same} of {len(got)} users identical (items, float32 scores, interest "
                 f"vector, explanations)")
    rows = []
    for n in sizes:
        for engine in ("local", "ray"):
            if engine == "ray" and n != sizes[0]:
                continue
            code = ("import sys, time; from multimodal_interest.cli import main; t = time.perf_counter(); "
                    "rc = main(sys.argv[1:]); hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]; "
                    "print('RESULT', rc, time.perf_counter() - t, hwm[0].split()[1])")  # peak RSS, kB
            args = ["-q", "recommend-batch", "--model", str(root / "bundle"), "--histories", str(root / f"h{n}.csv"),
                    "--platform", "b", "--source", "a", "--output", str(root / f"out{n}{engine}"), "--engine", engine]
            done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
            result = [l for l in done.stdout.splitlines() if l.startswith("RESULT")]
            if done.returncode or not result:
                raise RuntimeError(done.stderr[-3000:])
            _, rc, secs, rss = result[0].split()
            rows.append([f"{n:,}", engine, f"{int(rss) / 1024:.0f}", f"{float(secs):.1f}", f"{n / float(secs):.0f}"])
            print(rows[-1], flush=True)
    lines += ["", markdown_table(["users", "engine", "driver peak RSS (MiB)", "seconds", "users/s"], rows)]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1000, help="items of each platform's catalog")
    ap.add_argument("--check-users", type=int, default=200)
    ap.add_argument("--sizes", default="10000,100000", help="users of the memory runs")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: embed, batch")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    print(f"# bench_ray ({machine()}), {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "embed" not in skip:
            with ray_session(None):
                print("\n".join(bench_embed(root, args.items)), flush=True)
        if "batch" not in skip:
            print("\n".join(bench_batch(root, args.check_users, [int(x) for x in args.sizes.split(",")])))


if __name__ == "__main__":
    main()
