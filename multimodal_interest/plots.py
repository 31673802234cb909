"""Figures of an evaluation: NDCG@10 per method, metrics by history length, the interest map.

Each function writes one PNG and returns its path; matplotlib runs headless (Agg).
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from multimodal_interest.evaluate import EvalResult
from multimodal_interest.stats import bootstrap


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_methods(results: dict[str, EvalResult], path: Path, metric: str = "ndcg@10",
                 title: str = "") -> Path:
    """Bar per method: mean ``metric`` with its 95% bootstrap interval."""
    plt = _pyplot()
    names = list(results)
    stats = [bootstrap(results[n].values[metric]) for n in names]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.6))
    means = np.array([s.mean for s in stats])
    err = np.array([[s.mean - s.low for s in stats], [s.high - s.mean for s in stats]])
    ax.bar(names, means, yerr=err, capsize=4, color=["#4c72b0" if n != "interest-model" else "#dd8452"
                                                     for n in names])
    ax.set_ylabel(f"{metric} (95% CI)")
    ax.set_title(textwrap.fill(title, 60), fontsize=9)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_buckets(results: dict[str, EvalResult], path: Path, metric: str = "ndcg@10",
                 title: str = "") -> Path:
    """One line per method: mean ``metric`` per source-history-length bucket."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, res in results.items():
        buckets = res.buckets(metric)
        labels = [k for k, v in buckets.items() if v is not None]
        ax.plot(labels, [buckets[k].mean for k in labels], marker="o", label=name,
                linewidth=2.5 if name == "interest-model" else 1.2)
    ax.set_xlabel("source history length")
    ax.set_ylabel(metric)
    ax.set_title(textwrap.fill(title, 60), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_interest_map(vectors: dict[str, np.ndarray], path: Path, title: str = "") -> Path:
    """PCA of interest vectors ``{label: [n, D]}`` (e.g. users seen from each platform) to 2-D."""
    plt = _pyplot()
    stacked = np.concatenate(list(vectors.values()))
    centred = stacked - stacked.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    fig, ax = plt.subplots(figsize=(5, 4.5))
    start = 0
    for label, v in vectors.items():
        ax.scatter(xy[start:start + len(v), 0], xy[start:start + len(v), 1], s=6, alpha=0.5, label=label)
        start += len(v)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(textwrap.fill(title, 60), fontsize=9)
    ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_learning_curve(curve, path: Path) -> Path:
    """One line per method: ``curve.metric`` (95% interval) against the overlap fraction
    (a :class:`~multimodal_interest.learning_curve.LearningCurve`; symlog x axis, so 0 and 0.01
    are both visible)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, points in curve.points.items():
        xy = [(f, p) for f, p in zip(curve.fractions, points) if p is not None]
        if not xy:
            continue
        x = np.array([f for f, _ in xy])
        mean = np.array([p.mean for _, p in xy])
        err = np.array([[p.mean - p.low for _, p in xy], [p.high - p.mean for _, p in xy]])
        ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, label=name,
                    linewidth=2.5 if name == "interest-model" else 1.2)
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xticks(curve.fractions)
    ax.set_xticklabels([f"{f:g}" for f in curve.fractions])
    ax.set_xlabel("overlap fraction f (share of overlapping training users linked)")
    ax.set_ylabel(f"{curve.metric} (95% CI)")
    ax.set_title(textwrap.fill(curve.title, 60), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
