"""Peak memory (RSS) of chunked full-ranking evaluation: flat in the number of users.

    python benchmarks/bench_eval_memory.py --items 20000 --users 1000 4000 16000 --chunks 64 512

Each (users, chunk size) runs in a fresh process: a synthetic cold-start task over
``--items`` target items (20 hidden target items and 10 source items per user) and a
scorer that returns random ``[chunk, items]`` scores (seeded per user), as a model's output
would be. Reported: RSS before evaluation, peak RSS, their difference, time per 1,000 users,
and NDCG@10 (the same for every chunk size). The reference
row of each user count up to 4,000 puts all users in one chunk (no chunking): its memory
grows with the users (about 0.45 GB per 1,000 users over 20,000 items).
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table  # noqa: E402

REFERENCE_MAX_USERS = 4000  # the unchunked reference beyond this would need several GB


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def child(n_users: int, n_items: int, chunk: int) -> None:
    import numpy as np
    import pandas as pd
    import torch

    from multimodal_interest.data.task import ColdStartTask
    from multimodal_interest.evaluate import evaluate

    rng = np.random.default_rng(0)
    users = np.arange(n_users)

    def rows(platform: str, per_user: int) -> pd.DataFrame:
        return pd.DataFrame({"user_idx": np.repeat(users, per_user), "platform": platform,
                             "item_idx": rng.integers(0, n_items, n_users * per_user),
                             "timestamp": np.tile(np.arange(per_user, dtype=float), n_users), "weight": 1.0})

    task = ColdStartTask("synthetic", "memory", "src", "tgt", {"src": n_items, "tgt": n_items}, n_users,
                         rows("src", 10), rows("tgt", 20), users[:0], users)

    def scorer(chunk_users: np.ndarray) -> torch.Tensor:
        """Pseudo-random scores from a hash of (user, item): the same for a user in any chunk."""
        key = torch.from_numpy(chunk_users)[:, None] * n_items + torch.arange(n_items)
        return ((key * 2654435761) % 4294967291).float()

    task.target_truth(users)  # build the ground-truth index before measuring
    before = _rss_kb()
    t0 = time.perf_counter()
    res = evaluate(scorer, task, users, chunk_size=chunk)
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"RESULT {before} {peak} {secs:.3f} {res.values['ndcg@10'].mean():.6f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=20000)
    p.add_argument("--users", type=int, nargs="+", default=[1000, 4000, 16000])
    p.add_argument("--chunks", type=int, nargs="+", default=[64, 512])
    p.add_argument("--child", type=int, nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    rows = []
    for n in args.users:
        for chunk in [*args.chunks, *([n] if n <= REFERENCE_MAX_USERS else [])]:
            out = subprocess.run([sys.executable, __file__, "--child", str(n), str(args.items), str(chunk)],
                                 capture_output=True, text=True, check=True).stdout
            before, peak, secs, ndcg = next(x for x in out.splitlines() if x.startswith("RESULT")).split()[1:]
            label = f"{chunk}" + (" (all users: reference)" if chunk == n else "")
            rows.append([n, label, f"{int(before) / 1024:.0f}", f"{int(peak) / 1024:.0f}",
                         f"{(int(peak) - int(before)) / 1024:.0f}", f"{float(secs) / n * 1000:.2f}", ndcg])
    print(f"Full ranking over {args.items} items; {machine()}\n")
    print(markdown_table(["users", "chunk size", "RSS before (MiB)", "peak RSS (MiB)", "peak - before (MiB)",
                          "s per 1k users", "NDCG@10 (random scores)"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
