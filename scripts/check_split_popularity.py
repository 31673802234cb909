"""Sanity check of a cold-start split: the popularity baseline on its test users.

Popularity = distinct training users per target item, ranked over all target items (ties:
lower item_idx first). On amazon-art-office's published split this should land near
EVALUATION.md's popularity row (Art->Office NDCG@10 0.0451, Recall@10 0.0376; Office->Art
NDCG@10 0.0170, Recall@10 0.0153). A quick data check, not the project's metrics module.

    python scripts/check_split_popularity.py DATASET_FOLDER [--split published] [--k 10]
"""
from __future__ import annotations

import argparse

import numpy as np

from multimodal_interest.data.dataset import CrossPlatformDataset


def popularity_scores(task, k: int) -> tuple[float, float]:
    """Mean Recall@k and NDCG@k (binary gains, ideal DCG over min(k, |truth|)) of test users."""
    rows = task.train[task.train["platform"] == task.target]
    pairs = np.unique(rows[["user_idx", "item_idx"]].to_numpy(), axis=0)
    counts = np.bincount(pairs[:, 1], minlength=task.n_items[task.target])
    top = np.argsort(-counts, kind="stable")[:k]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    recall, ndcg = [], []
    for truth in task.target_truth(task.test_users):
        hits = np.isin(top, truth)
        recall.append(hits.sum() / len(truth))
        ndcg.append((hits * discount).sum() / discount[:min(k, len(truth))].sum())
    return float(np.mean(recall)), float(np.mean(ndcg))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--split", default="published")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    ds = CrossPlatformDataset.load(args.dataset)
    print(f"| direction | test users | Recall@{args.k} | NDCG@{args.k} |\n|---|---|---|---|")
    for source, target in ((ds.platforms[0], ds.platforms[1]), (ds.platforms[1], ds.platforms[0])):
        task = ds.cold_start(source, target, args.split)
        recall, ndcg = popularity_scores(task, args.k)
        print(f"| {task.label} | {len(task.test_users)} | {recall:.4f} | {ndcg:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
