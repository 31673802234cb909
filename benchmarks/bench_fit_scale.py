"""Peak memory and time of the closed-form fit (``fit_closed_form``) from 10^4 to 10^6 fit users.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_fit_scale.py --users 10000 100000 1000000 \
        --items 100000 --landmarks 2048 --threads 1

Each size runs in a fresh process (``--one``), so sizes do not share a peak; its peak RSS is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end, and before the fit (after the data
are built) for comparison; the fit's CPU seconds (user + system) beside its wall seconds, since
a shared machine stretches the latter. The data are synthetic, ids only (no item content: the model's
ids and constant blocks): ``--items`` items on each of two platforms, cut into
:data:`CLUSTERS` clusters, cluster ``c`` of the source matching cluster ``pi(c)`` of the
target; each user likes :data:`USER_CLUSTERS` clusters and has 10-30 items on each platform,
drawn from their clusters with Zipf popularity within a cluster and :data:`NOISE` of them
uniform over the catalog. So a source history says which target clusters a user likes (a
planted rank-:data:`CLUSTERS` structure) and validation NDCG@10 is meaningful; the popularity
ranking's NDCG@10 is reported beside it. ``--eval-users`` validation and as many test users
(their target items hidden) come on top of the fit users, whatever the size.

The fit is the real one with its search: exact up to ``--exact-rows`` fit rows (the config's
default), beyond that the search on a sample of that many rows and the solve over every row
through ``--landmarks`` landmark rows.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine, markdown_table  # noqa: E402

CLUSTERS = 256  # item clusters per platform
USER_CLUSTERS = 2  # clusters each user likes
NOISE = 0.1  # share of a user's items drawn uniformly over the catalog
ZIPF = 1.0  # popularity exponent within a cluster


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _items(rng, likes, n_items: int, perm, counts):
    """``[sum(counts)]`` item_idx: each row's ``counts`` items from its liked clusters
    (``likes [U, USER_CLUSTERS]``, mapped through ``perm``), Zipf within a cluster, ``NOISE``
    uniform."""
    import numpy as np

    size = n_items // CLUSTERS
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(counts)), counts)
    cluster = perm[likes[owner, rng.integers(0, USER_CLUSTERS, total)]]
    cdf = np.cumsum(1.0 / np.arange(1, size + 1) ** ZIPF)
    rank = np.searchsorted(cdf / cdf[-1], rng.random(total))
    items = cluster * size + rank  # rank 0 of each cluster is its most popular item
    noise = rng.random(total) < NOISE
    items[noise] = rng.integers(0, n_items, int(noise.sum()))
    return items


def world(n_fit: int, n_eval: int, n_items: int, seed: int = 0):
    """``(task, features)``: ``n_fit`` users on both platforms, ``n_eval`` validation and
    ``n_eval`` test users (their target items in the holdout), ids only."""
    import numpy as np
    import pandas as pd

    from multimodal_interest.data.task import ColdStartTask
    from multimodal_interest.training.features import ItemFeatures

    rng = np.random.default_rng(seed)
    n_users = n_fit + 2 * n_eval
    likes = rng.integers(0, CLUSTERS, (n_users, USER_CLUSTERS))
    frames = []
    for p, perm in (("src", np.arange(CLUSTERS)), ("tgt", rng.permutation(CLUSTERS))):
        counts = rng.integers(10, 31, n_users)
        items = _items(rng, likes, n_items, perm, counts)
        users = np.repeat(np.arange(n_users), counts)
        stamp = np.arange(len(users)) - np.repeat(np.cumsum(counts) - counts, counts)
        frames.append(pd.DataFrame({"user_idx": users, "platform": p, "item_idx": items,
                                    "timestamp": stamp.astype(np.float64), "weight": np.float32(1.0)}))
        del items, users, stamp
    df = pd.concat(frames, ignore_index=True)
    del frames
    df["platform"] = df["platform"].astype("category")
    df = df.sort_values(["user_idx", "timestamp"], kind="stable", ignore_index=True)
    valid, test = np.arange(n_fit, n_fit + n_eval), np.arange(n_fit + n_eval, n_users)
    hidden = (df["user_idx"].to_numpy() >= n_fit) & (df["platform"] == "tgt").to_numpy()
    task = ColdStartTask("synthetic-scale", f"u{n_fit}", "src", "tgt", {"src": n_items, "tgt": n_items},
                         n_users, df[~hidden].reset_index(drop=True), df[hidden].reset_index(drop=True),
                         valid, test, synthetic=True)
    return task, ItemFeatures()


def popularity_ndcg10(task) -> float:
    import numpy as np
    import torch

    from multimodal_interest.evaluate import evaluate

    tgt = task.train.loc[task.train["platform"] == task.target, "item_idx"].to_numpy()
    popular = torch.from_numpy(np.bincount(tgt, minlength=task.n_items[task.target]).astype(np.float32))
    result = evaluate(lambda us: popular.expand(len(us), -1).clone(), task, task.valid_users, ks=(10,))
    return float(result.values["ndcg@10"].mean())


def one(args: argparse.Namespace) -> dict:
    """One size in this process: build the world, fit, report."""
    import torch

    torch.set_num_threads(args.threads)
    from multimodal_interest.training import TrainConfig
    from multimodal_interest.training.closed_form import fit_closed_form

    t = time.perf_counter()
    task, features = world(args.one, args.eval_users, args.items, args.seed)
    built, data_gb = time.perf_counter() - t, _peak_gb()
    config = TrainConfig(exact_rows=args.exact_rows, landmarks=args.landmarks, seed=args.seed)
    cpu = _cpu_s()
    result = fit_closed_form(task, features, config)
    cpu = _cpu_s() - cpu
    return {"users": args.one, "interactions": len(task.train) + len(task.holdout), "data_s": round(built, 1),
            "data_peak_gb": round(data_gb, 2), "fit_s": round(result.seconds, 1), "fit_cpu_s": round(cpu, 1), "peak_gb": round(_peak_gb(), 2),
            "valid_ndcg10": round(result.valid_ndcg10, 4), "popularity_ndcg10": round(popularity_ndcg10(task), 4),
            "fit": result.model.info["fit"], "best": result.best.row()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="fit users per size")
    ap.add_argument("--items", type=int, default=100_000, help="items on each platform")
    ap.add_argument("--eval-users", type=int, default=2000, help="validation users (and as many test users)")
    ap.add_argument("--exact-rows", type=int, default=12_000)
    ap.add_argument("--landmarks", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write every size's result here (JSON lines)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: one size
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args)), flush=True)
        return 0
    rows = []
    for n in args.users:
        cmd = [sys.executable, __file__, "--one", str(n), "--items", str(args.items), "--eval-users",
               str(args.eval_users), "--exact-rows", str(args.exact_rows), "--landmarks", str(args.landmarks),
               "--threads", str(args.threads), "--seed", str(args.seed)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if out.returncode:
            print(f"{n} users: exit {out.returncode}\n{out.stderr[-3000:]}", file=sys.stderr)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")
        fit = r["fit"]
        rows.append([f"{n:,}", f"{r['interactions']:,}", fit["path"], f"{fit['fit_rows']:,}",
                     fit.get("landmarks", "-"), f"{r['data_s']:.0f} s", f"{r['fit_s']:.0f} s ({r.get('fit_cpu_s', float('nan')):.0f} s CPU)",
                     f"{r['data_peak_gb']:.2f} GB", f"{r['peak_gb']:.2f} GB", f"{r['valid_ndcg10']:.4f}",
                     f"{r['popularity_ndcg10']:.4f}"])
        print(json.dumps(r), file=sys.stderr, flush=True)
    print(f"{machine()}; {args.items:,} items per platform, {args.eval_users:,} validation users, "
          f"exact_rows {args.exact_rows:,}, ids only\n")
    print(markdown_table(["fit users", "interactions", "path", "fit rows", "landmarks", "data built", "fit (wall, CPU)",
                          "peak RSS, data", "peak RSS, fit", "valid NDCG@10", "popularity NDCG@10"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
