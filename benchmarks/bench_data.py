"""Loading MovieLens-1M (1,000,209 interactions) into a dataset and building histories.

Each step runs in a fresh process, so its peak RSS is its own. Times are the best of
``--repeat`` runs. References in the same run: pandas ``read_csv`` of the raw RecBole file
(what any loader must at least do), and per-user histories built with a pandas
sort + groupby + a Python padding loop (the usual hand-written way).

    python benchmarks/bench_data.py [--data ../shared/data] [--repeat 3]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path

MAX_LEN = 50


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _step(name: str, raw: str, folder: str, repeat: int, queue) -> None:
    import numpy as np
    import pandas as pd

    from multimodal_interest.data import CrossPlatformDataset, import_dataset

    base = _rss_mb()
    ds = CrossPlatformDataset.load(folder) if name == "histories" else None
    best = float("inf")
    for i in range(repeat if name != "import" else 1):
        start = time.perf_counter()
        if name == "read_csv (reference)":
            pd.read_csv(Path(raw) / "ml-1m.inter", sep="\t")
        elif name == "import":
            import_dataset("recbole", raw, folder)
        elif name == "load":
            CrossPlatformDataset.load(folder)
        elif name == "histories":
            ds.histories("ml-1m", max_len=MAX_LEN)
        elif name == "histories, pandas groupby + loop (reference)":
            df = pd.read_parquet(Path(folder) / "interactions.parquet")
            start = time.perf_counter()  # the reading is not part of this reference
            lists = (df.sort_values(["user_id", "timestamp"], kind="stable")
                     .groupby("user_id", sort=False)["item_id"].agg(list))
            items = np.zeros((len(lists), MAX_LEN), dtype=np.int64)
            codes = {v: k for k, v in enumerate(pd.unique(df["item_id"]))}
            for row, seq in enumerate(lists):
                tail = [codes[v] for v in seq[-MAX_LEN:]]
                items[row, :len(tail)] = tail
        best = min(best, time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((best, peak - base, peak))


def run_step(name: str, raw: Path, folder: Path, repeat: int) -> tuple[float, float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_step, args=(name, str(raw), str(folder), repeat, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[1]
    default = Path(os.environ.get("MMI_SHARED_DATA", repo.parent / "shared" / "data"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default, help="the shared data folder")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    raw = args.data / "movielens" / "ml-1m"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ml-1m"
        for name in ("read_csv (reference)", "import", "load", "histories",
                     "histories, pandas groupby + loop (reference)"):
            rows.append((name, *run_step(name, raw, folder, args.repeat)))
    times = dict((r[0], r[1]) for r in rows)
    print(f"ML-1M, 1,000,209 interactions, 6,040 users; histories of every user, last {MAX_LEN} "
          f"items; best of {args.repeat}; {os.cpu_count()} CPUs. RSS added: peak of the step's "
          "process above its RSS after imports (the histories step holds the loaded dataset).\n")
    print("| step | seconds | vs reference | peak RSS added (MiB) | process peak RSS (MiB) |")
    print("|---|---|---|---|---|")
    refs = {"load": "read_csv (reference)",
            "histories": "histories, pandas groupby + loop (reference)"}
    for name, seconds, added, peak in rows:
        ratio = (f"{seconds / times[refs[name]]:.2f}x of {refs[name].split(' (')[0]}"
                 if name in refs else "")
        print(f"| {name} | {seconds:.3f} | {ratio} | {added:.0f} | {peak:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
