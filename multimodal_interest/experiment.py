"""One benchmark run: the interest model and the baselines on the same cold-start task.

Every method sees the same ``ColdStartTask`` (same users, same hidden interactions), is
tuned or early-stopped on the task's validation users, and is scored on its test users
with the same full-ranking evaluator. :func:`write_report` saves what a reader needs:
per-user results (JSON), tables (Markdown) and figures (PNG).
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from multimodal_interest.baselines import BASELINES, list_baselines, tune
from multimodal_interest.blend import BLEND, PARTS, tune_blend
from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.evaluate import SAMPLED_METRICS, EvalResult, bucket_table, compare, evaluate
from multimodal_interest.store import atomic_write_bytes
from multimodal_interest.training import ItemFeatures, ModelScorer, TrainConfig, load_run, train

logger = logging.getLogger(__name__)

MODEL = "interest-model"
METRICS = ["recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr"]


@dataclass
class MethodRun:
    result: EvalResult
    seconds: float  # fitting/tuning/training time
    notes: dict = field(default_factory=dict)  # tuning trials, training summary
    model: object = None  # the InterestModel, for the interest model


def content_vectors(features: ItemFeatures, modality: str) -> dict[str, torch.Tensor] | None:
    """One modality's item vectors per platform, for the content baselines (None if absent)."""
    out = {p: per[modality] for p, per in features.vectors.items() if modality in per}
    return out or None


def run_methods(task: ColdStartTask, methods: list[str], features: ItemFeatures,
                output_dir: Path, train_config: TrainConfig | None = None,
                run_dir: Path | None = None, content_modality: str = "text",
                sampled: bool = False, progress: bool = True) -> dict[str, MethodRun]:
    """Fit (or load) each method and evaluate it on ``task.test_users``."""
    vectors = content_vectors(features, content_modality)
    if BLEND in methods and not set(PARTS) <= set(methods):
        raise ValueError(f"{BLEND} blends {' and '.join(PARTS)}: run them too (--methods)")
    runs: dict[str, MethodRun] = {}
    scorers: dict[str, Callable[[np.ndarray], torch.Tensor]] = {}
    for name in sorted(methods, key=lambda n: n == BLEND):  # the blend after its parts
        start = time.perf_counter()
        model = None
        if name == MODEL:
            model, notes = _interest_model(task, features, output_dir, train_config, run_dir, progress)
            scorer = ModelScorer(model, task)
        elif name == BLEND:
            scorer, trials = tune_blend(*(scorers[p] for p in PARTS), task)
            notes = {"trials": trials}
        elif name in BASELINES:
            if BASELINES[name].needs_vectors and vectors is None:
                logger.warning("%s skipped: it needs %r item vectors (mmi embed)", name, content_modality)
                continue
            tuned = tune(name, task, vectors)
            scorer, notes = tuned.model.score, {"trials": tuned.trials}
        else:
            raise ValueError(f"unknown method {name!r}; methods: {', '.join(all_methods())}")
        scorers[name] = scorer
        fitted = time.perf_counter() - start
        result = evaluate(scorer, task, task.test_users, ks=(10, 50), sampled=sampled)
        runs[name] = MethodRun(result, fitted, notes, model)
        logger.info("%s: test NDCG@10 %.4f (%.0fs)", name, result.values["ndcg@10"].mean(), fitted)
    return runs


def all_methods() -> list[str]:
    """Every method :func:`run_methods` knows, in report order."""
    return [MODEL, *list_baselines(), BLEND]


def parse_methods(text: str) -> list[str]:
    """``--methods``: ``all`` or comma-separated names."""
    return all_methods() if text == "all" else [m.strip() for m in text.split(",") if m.strip()]


def _interest_model(task, features, output_dir, train_config, run_dir, progress):
    if run_dir is not None:
        return load_run(run_dir, task, features), {"run": str(run_dir)}
    run_dir = model_run_dir(output_dir, task)
    result = train(task, features, train_config or TrainConfig(), run_dir, progress_bar=progress)
    notes = {"run": str(run_dir), "best_epoch": result.best_epoch, "epochs": result.epochs_run,
             "valid_ndcg10": result.best_valid_ndcg10, "seconds_to_best": round(result.seconds_to_best, 1)}
    return result.model, notes


def model_run_dir(output_dir: Path, task: ColdStartTask) -> Path:
    """The folder where :func:`run_methods` trains (and resumes) the interest model of ``task``."""
    return Path(output_dir) / f"run-{task.source}-{task.target}"


def interest_map_vectors(model, task: ColdStartTask, n: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    """Interest vectors of users seen from each platform: test users from their source
    history, training users from their target history (``{label: [n, D]}``)."""
    rng = np.random.default_rng(seed)
    out = {}
    for platform, pool in ((task.source, task.test_users), (task.target, task.overlap_users())):
        users = rng.choice(pool, size=min(n, len(pool)), replace=False)
        h = task.histories(platform, users, max_len=model.fusion.config.max_len)
        with torch.inference_mode():
            u = model.eval().encode_users(h.items, h.mask, platform).cpu().numpy()
        out[f"users seen on {platform}"] = u[np.linalg.norm(u, axis=1) > 0]
    return out


def best_baseline(results: dict[str, EvalResult], metric: str = "ndcg@10") -> str | None:
    """The baseline with the highest mean ``metric`` (None when only the model ran); the
    blend, which holds the model, is not a baseline."""
    baselines = [n for n in results if n not in (MODEL, BLEND)]
    return max(baselines, key=lambda n: results[n].values[metric].mean()) if baselines else None


def write_report(task: ColdStartTask, runs: dict[str, MethodRun], output_dir: Path,
                 interest_map: dict[str, np.ndarray] | None = None, command: str | None = None) -> Path:
    """``<dir>/<source>-<target>.json|.md`` and PNG figures; returns the Markdown path.

    Every metric is shown with its 95% interval over users; the last column is the paired
    difference in NDCG@10 against the best baseline of this run (on the same users), so a
    reader sees at once whether the model beats it by more than the interval. ``command``
    (the command line that made the report) is recorded with the date.
    """
    from multimodal_interest.plots import plot_buckets, plot_interest_map, plot_methods

    output_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{task.source}-{task.target}"
    results = {n: r.result for n, r in runs.items()}
    reference = best_baseline(results)
    metrics = [m for m in METRICS + list(SAMPLED_METRICS) if m in next(iter(results.values())).values]
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = {"task": task.label, "synthetic": task.synthetic, "test_users": len(task.test_users),
           "command": command, "date": made, "best_baseline": reference,
           "methods": {n: {"summary": {m: vars(i) for m, i in r.result.summary().items()},
                           "seconds": round(r.seconds, 1), "notes": _jsonable(r.notes)}
                       for n, r in runs.items()}}
    atomic_write_bytes(output_dir / f"{stem}.json", json.dumps(doc, indent=1).encode())
    for name, r in runs.items():
        r.result.to_json(output_dir / f"{stem}.{name}.users.json")
    figures = [plot_methods(results, output_dir / f"{stem}-ndcg10.png", title=task.label),
               plot_buckets(results, output_dir / f"{stem}-by-history.png", title=task.label)]
    if interest_map:
        figures.append(plot_interest_map(interest_map, output_dir / f"{stem}-interest-map.png",
                                         title=f"interest vectors, {task.label}"))
    md = [f"## {task.label}", "", f"{len(task.test_users)} test users, full ranking over "
          f"{task.n_items[task.target]} {task.target} items; mean [95% bootstrap interval over users]"
          + (f"; Δ: paired difference against the best baseline, {reference}" if reference else "") + ".",
          "", f"Made {made}" + (f" by `{command}`" if command else "") + ".", "",
          compare(results, metrics, with_ci=("ndcg@10", *[m for m in metrics if m != "ndcg@10"]),
                  reference=reference), "",
          "NDCG@10 by source history length:", "", bucket_table(results), "",
          "Time to fit (tuning or training included): " +
          ", ".join(f"{n} {r.seconds:.0f}s" for n, r in runs.items()), ""]
    md += [f"![{f.stem}]({f.name})" for f in figures]
    path = output_dir / f"{stem}.md"
    atomic_write_bytes(path, ("\n".join(md) + "\n").encode())
    return path


def _jsonable(x):
    return json.loads(json.dumps(x, default=str))
