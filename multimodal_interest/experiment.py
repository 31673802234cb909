"""One benchmark run: the interest model and the baselines on the same cold-start task.

Every method sees the same ``ColdStartTask`` (same users, same hidden interactions), is
tuned on it (each baseline tries up to ``tuning_budget`` settings judged on the validation
users; the interest model runs its own search: :mod:`multimodal_interest.tuning` records
what each tried and what judged it), and is scored on its test users with the same
full-ranking evaluator. :func:`write_report` saves what a reader needs:
per-user results (JSON), tables (Markdown) and figures (PNG), and returns them as a
:class:`Report` (data: a command prints its :meth:`Report.summary`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from fusion.files import sha256_file

from multimodal_interest.baselines import BASELINES, DEFAULT_BUDGET, judged_by, list_baselines, tune, tuning_settings
from multimodal_interest.blend import BLEND, PARTS, tune_blend
from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.evaluate import (SAMPLED_METRICS, SLICES, EvalResult, ItemSlices, Table, bucket_table,
                                         compare_table, evaluate)
from multimodal_interest.run import Run
from multimodal_interest.stats import paired_difference
from multimodal_interest.store import atomic_write_bytes
from multimodal_interest.features import item_texts as platform_item_texts
from multimodal_interest.training import ItemFeatures, ModelScorer, TrainConfig, load_run, train
from multimodal_interest.tuning import model_tuning, searched, trials_table, tuning_of, tuning_table

logger = logging.getLogger(__name__)

MODEL = "interest-model"
METRICS = ["recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr"]


@dataclass
class MethodRun:
    result: EvalResult | None  # None when the method failed
    seconds: float  # fitting/tuning/training time
    notes: dict = field(default_factory=dict)  # tuning trials, training summary
    model: object = None  # the InterestModel, for the interest model
    error: str | None = None  # why the method failed ("ValueError: ..."); None when it ran


def content_features(features: ItemFeatures, modality: str) -> dict[str, torch.Tensor] | None:
    """One modality's item features per platform, for the content baselines (None if absent)."""
    out = {p: per[modality] for p, per in features.vectors.items() if modality in per}
    return out or None


def item_texts(dataset, platforms: list[str]) -> dict[str, list[str]] | None:
    """Each platform's item texts, row = item_idx, for the lexical baselines: the text the
    interest model reads (:func:`multimodal_interest.features.item_texts`, one rule for
    both); platforms without text fields are left out (None when none has any: a dataset
    of ids only)."""
    out = {p: platform_item_texts(dataset, p) for p in platforms if dataset.text_fields(p)}
    return out or None


def run_methods(task: ColdStartTask, methods: list[str], features: ItemFeatures,
                output_dir: Path, train_config: TrainConfig | None = None,
                run_dir: Path | None = None, content_modality: str = "text",
                sampled: bool = False, progress: bool = True,
                texts: dict[str, list[str]] | None = None,
                tuning_budget: int = DEFAULT_BUDGET) -> dict[str, MethodRun]:
    """Fit (or load) each method and evaluate it on ``task.test_users``. ``texts``: the
    items' texts per platform (:func:`item_texts`), for the baselines that need text;
    ``tuning_budget``: settings each baseline tries at most
    (:func:`~multimodal_interest.baselines.tuning_settings`: its grid's first ones, or
    beyond its grid seeded draws from its space).

    Each method's results are saved in ``output_dir`` as soon as it finishes
    (:class:`MethodState`); run again on the same folder, a method saved with the same
    fingerprint (task data and split, method, settings, item features, and the source code
    that fits and scores it: :func:`code_digest`) is read back, not computed again.
    """
    if tuning_budget < 1:
        raise ValueError(f"tuning_budget must be >= 1, got {tuning_budget}")
    content = content_features(features, content_modality)
    unknown = [m for m in methods if m not in all_methods()]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; methods: {', '.join(all_methods())}")
    if BLEND in methods and not set(PARTS) <= set(methods):
        raise ValueError(f"{BLEND} blends {' and '.join(PARTS)}: run them too (--methods)")
    order = sorted(methods, key=lambda n: n == BLEND)  # the blend after its parts
    common = {"task": task_fingerprint(task), "sampled": sampled, "code": code_digest("evaluate.py", "metrics.py")}
    baseline = {"tuning_budget": tuning_budget, "texts": _digest(texts), "code": code_digest("baselines"),
                "content": [content_modality, features.fingerprints.get(content_modality)]}
    learned = {"config": (train_config or TrainConfig()).flat(), "run": str(run_dir),
               "features": features.fingerprints, "code": code_digest("training", "../fusion")}
    prints = {name: _digest({**common, "method": name, **(learned if name == MODEL else baseline)})
              for name in order if name != BLEND}
    prints[BLEND] = _digest([prints.get(p) for p in PARTS])
    saved = {name: state for name in order
             if (state := MethodState.load(output_dir, task, name, prints[name])) is not None}
    if BLEND in methods and BLEND not in saved:  # the blend needs its parts' scorers
        for part in PARTS:
            saved.pop(part, None)
    runs: dict[str, MethodRun] = {}
    scorers: dict[str, Callable[[np.ndarray], torch.Tensor]] = {}
    slices = ItemSlices.for_test(task)
    for i, name in enumerate(order, 1):
        if name in saved:
            runs[name] = saved[name].method_run(task, features)
            logger.info("[%d/%d] %s: done in an earlier run (same fingerprint %s), read from %s",
                        i, len(order), name, prints[name][:12], saved[name].path)
            continue
        logger.info("[%d/%d] %s: fitting", i, len(order), name)
        start = time.perf_counter()
        try:
            fitted = _fit_method(name, task, features, output_dir, train_config, run_dir, progress,
                                 content, content_modality, texts, tuning_budget, scorers)
            if fitted is None:
                continue
            scorer, notes, model = fitted
            seconds = time.perf_counter() - start
            result = evaluate(scorer, task, task.test_users, ks=(10, 50), sampled=sampled, slices=slices)
        except Exception as exc:  # one method failing is reported as failed; the others go on
            runs[name] = MethodRun(None, time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}")
            logger.error("[%d/%d] %s failed: %s", i, len(order), name, runs[name].error,
                         exc_info=not isinstance(exc, ValueError))  # a ValueError says why itself
            continue
        scorers[name] = scorer
        runs[name] = MethodRun(result, seconds, notes, model)
        MethodState.save(output_dir, task, name, prints[name], runs[name])
        logger.info("[%d/%d] %s: test NDCG@10 %.4f (%.0fs), saved", i, len(order), name,
                    result.values["ndcg@10"].mean(), seconds)
    return runs


def _fit_method(name, task, features, output_dir, train_config, run_dir, progress, content,
                content_modality, texts, tuning_budget, scorers):
    """``(scorer, notes, model)`` of one method fitted on ``task`` (model: the interest
    model's, else None); None when it is skipped for want of features or text."""
    if name == MODEL:
        model, notes = _interest_model(task, features, output_dir, train_config, run_dir, progress)
        return ModelScorer(model, task), notes, model
    if name == BLEND:
        failed = [p for p in PARTS if p not in scorers]
        if failed:
            raise ValueError(f"{BLEND} blends {' and '.join(PARTS)}, and {' and '.join(failed)} failed")
        scorer, trials = tune_blend(*(scorers[p] for p in PARTS), task)
        return scorer, searched(trials, f"NDCG@10 of the {len(task.valid_users)} validation users"), None
    if BASELINES[name].needs_features and content is None:
        logger.warning("%s skipped: it needs %r item features (mmi embed)", name, content_modality)
        return None
    textless = [p for p in task.platforms if not any(t.strip() for t in (texts or {}).get(p, ()))]
    if BASELINES[name].needs_text and textless:
        logger.warning("%s skipped: it needs item text, and there is none on %s", name, " or ".join(textless))
        return None
    tuned = tune(name, task, content, grid=tuning_settings(name, tuning_budget), item_texts=texts)
    trials = [{**options, "valid_ndcg10": value} for options, value in tuned.trials]
    return tuned.model.score, searched(trials, judged_by(name, len(task.valid_users))), None


def task_fingerprint(task: ColdStartTask) -> str:
    """sha256 of what a method sees of ``task``: its label, protocol, items, users, cold
    items and interactions."""
    h = hashlib.sha256(json.dumps([task.label, task.n_items, task.n_users, task.protocol],
                                  sort_keys=True, default=str).encode())
    for users in (task.valid_users, task.test_users, task.valid_cold_items, task.test_cold_items):
        h.update(b"-" if users is None else np.ascontiguousarray(users, dtype=np.int64).tobytes())
    for frame in (task.train, task.holdout):
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


def code_digest(*parts: str) -> str:
    """sha256 of the Python sources at ``parts`` (files or folders, relative to this
    package): a saved result computed by other code is not read back as this code's."""
    root = Path(__file__).parent
    paths = [(root / part).resolve() for part in parts]
    files = sorted(f for p in paths for f in ([p] if p.suffix == ".py" else p.rglob("*.py")))
    return _digest({f.relative_to(root.parent).as_posix(): sha256_file(f) for f in files})


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class MethodState:
    """One finished method of a task, saved in the output folder: its per-user results
    (``<source>-<target>.<method>.users.json``) and ``<source>-<target>.<method>.done.json``
    (fingerprint, seconds, notes, the results file's sha256), written after the results."""

    path: Path  # the .done.json
    doc: dict

    @staticmethod
    def paths(output_dir: Path, task: ColdStartTask, name: str) -> tuple[Path, Path]:
        stem = f"{task.source}-{task.target}.{name}"
        return output_dir / f"{stem}.users.json", output_dir / f"{stem}.done.json"

    @classmethod
    def save(cls, output_dir: Path, task: ColdStartTask, name: str, fingerprint: str,
             run: MethodRun) -> None:
        users, done = cls.paths(output_dir, task, name)
        output_dir.mkdir(parents=True, exist_ok=True)
        run.result.to_json(users)
        doc = {"method": name, "fingerprint": fingerprint, "seconds": run.seconds,
               "notes": _jsonable(run.notes), "users_sha256": sha256_file(users),
               "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write_bytes(done, json.dumps(doc, indent=1).encode())

    @classmethod
    def load(cls, output_dir: Path, task: ColdStartTask, name: str, fingerprint: str) -> MethodState | None:
        """The saved state if it has ``fingerprint`` and its results file is intact; else None
        (the method is computed again; a damaged or different one is said so)."""
        users, done = cls.paths(output_dir, task, name)
        if not done.is_file():
            return None
        try:
            doc = json.loads(done.read_text())
        except (OSError, ValueError):
            logger.warning("%s: unreadable; %s is computed again", done, name)
            return None
        if doc.get("fingerprint") != fingerprint:
            logger.info("%s: saved with other data, settings or code; computed again", name)
            return None
        if not users.is_file() or sha256_file(users) != doc.get("users_sha256"):
            logger.warning("%s: %s is missing or damaged; %s is computed again", done, users.name, name)
            return None
        return cls(done, doc)

    def method_run(self, task: ColdStartTask, features: ItemFeatures) -> MethodRun:
        users = self.path.with_name(self.path.name.removesuffix(".done.json") + ".users.json")
        notes, model = self.doc["notes"], None
        if self.doc["method"] == MODEL and notes.get("run"):
            model = load_run(Path(notes["run"]), task, features)  # for the interest map
            if "trials" not in notes:  # saved before the model's trials were noted
                notes = {**notes, **model_tuning(Run(Path(notes["run"])).log(), len(task.valid_users))}
        return MethodRun(EvalResult.from_json(users), float(self.doc["seconds"]), notes, model)


def all_methods() -> list[str]:
    """Every method :func:`run_methods` knows, in report order."""
    return [MODEL, *list_baselines(), BLEND]


def parse_methods(text: str) -> list[str]:
    """``--methods``: ``all`` or comma-separated names."""
    return all_methods() if text == "all" else [m.strip() for m in text.split(",") if m.strip()]


def _interest_model(task, features, output_dir, train_config, run_dir, progress):
    """The interest model of ``task`` (trained, or read from ``run_dir``) and its notes: the
    run, and the settings it tried with what judged them (:func:`model_tuning`)."""
    n_valid = len(task.valid_users)
    if run_dir is not None:
        return load_run(run_dir, task, features), {"run": str(run_dir), **model_tuning(Run(run_dir).log(), n_valid)}
    run_dir = model_run_dir(output_dir, task)
    result = train(task, features, train_config or TrainConfig(), run_dir, progress_bar=progress)
    notes = {"run": str(run_dir), "best_epoch": result.best_epoch, "epochs": result.epochs_run,
             "valid_ndcg10": result.best_valid_ndcg10, "seconds_to_best": round(result.seconds_to_best, 1),
             **model_tuning(result.history, n_valid)}
    return result.model, notes


def model_run_dir(output_dir: Path, task: ColdStartTask) -> Path:
    """The folder where :func:`run_methods` trains (and resumes) the interest model of ``task``."""
    return Run.for_task(output_dir, task.source, task.target).folder


def interest_map_vectors(model, task: ColdStartTask, n: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    """Interest vectors of users seen from each platform: test users from their source
    history, training users from their target history (``{label: [n, D]}``)."""
    rng = np.random.default_rng(seed)
    out = {}
    for platform, pool in ((task.source, task.test_users), (task.target, task.overlap_users())):
        if platform not in getattr(model.fusion, "history_platforms", [platform]):
            continue  # a linear model reads histories of the platforms it was fitted on only
        users = rng.choice(pool, size=min(n, len(pool)), replace=False)
        h = task.histories(platform, users, max_len=model.fusion.config.max_len)
        with torch.inference_mode():
            u = model.eval().encode_users(h.items, h.mask, platform).cpu().numpy()
        u = u[np.linalg.norm(u, axis=1) > 0]  # empty histories (e.g. no known item) have none
        if len(u):
            out[f"users seen on {platform}"] = u
    if sum(map(len, out.values())) < 3:
        logger.warning("no interest map: fewer than 3 users with an interest vector")
        return {}
    return out


def best_baseline(results: dict[str, EvalResult], metric: str = "ndcg@10") -> str | None:
    """The baseline with the highest mean ``metric`` (None when only the model ran); the
    blend, which holds the model, is not a baseline."""
    baselines = [n for n in results if n not in (MODEL, BLEND)]
    return max(baselines, key=lambda n: results[n].values[metric].mean()) if baselines else None


@dataclass
class Report:
    """What :func:`write_report` made, as data: the tables and the files it wrote.

    :meth:`summary` is what a command prints (title, what the numbers are, the results
    table, the methods that failed, the cold-item slices); :meth:`markdown` is the whole
    report file (the summary, then results by history length, fitting times and figures).
    """

    title: str  # the task's label
    intro: str  # what the numbers are
    made: str  # date (UTC)
    command: str | None  # the command line that made the report
    results: Table  # one row per method: every metric with its 95% interval, and the Δ
    by_history: Table  # NDCG@10 per source history length bucket
    tuning: Table  # per tuned method: how many settings, what judged them, the one kept
    seconds: dict[str, float]  # fitting time per method
    path: Path  # the Markdown report
    json_path: Path  # the report's data (summaries, notes)
    figures: list[Path] = field(default_factory=list)
    tuning_budget: int = DEFAULT_BUDGET  # settings each baseline could try
    trials: Table = field(default_factory=lambda: Table([], []))  # every trial of every tuned method
    failed: dict[str, str] = field(default_factory=dict)  # method -> why it failed
    slices: dict[str, Table] = field(default_factory=dict)  # cold-item slice -> its results table

    def summary(self) -> str:
        made = f"Made {self.made}" + (f" by `{self.command}`" if self.command else "") + "."
        lines = [f"## {self.title}", "", self.intro, "", made, "", self.results.markdown(), ""]
        if self.failed:
            lines += ["Failed (no result):", ""] + [f"- {n}: {why}" for n, why in self.failed.items()] + [""]
        for name, table in self.slices.items():
            lines += [f"{SLICES[name]}:", "", table.markdown(), ""]
        return "\n".join(lines)

    def markdown(self) -> str:
        times = ", ".join(f"{n} {s:.0f}s" for n, s in self.seconds.items())
        lines = [self.summary(), "NDCG@10 by source history length:", "", self.by_history.markdown(), "",
                 self.tuning_text(), "", self.tuning.markdown(), "",
                 "Every setting tried, in order:", "", self.trials.markdown(), "",
                 f"Time to fit (tuning or training included): {times}", ""]
        return "\n".join(lines + [f"![{f.stem}]({f.name})" for f in self.figures]) + "\n"

    def tuning_text(self) -> str:
        """How the methods were tuned, in words (the table after it gives each one's numbers)."""
        drawn = ("its grid's first settings" if self.tuning_budget <= DEFAULT_BUDGET else
                 "its grid, then seeded random draws from its documented space")
        return (f"Tuning: each baseline tried at most {self.tuning_budget} settings ({drawn}) and kept the "
                f"best; each method's number of settings and what judged them:")


def write_report(task: ColdStartTask, runs: dict[str, MethodRun], output_dir: Path,
                 interest_map: dict[str, np.ndarray] | None = None, command: str | None = None,
                 tuning_budget: int = DEFAULT_BUDGET) -> Report:
    """``<dir>/<source>-<target>.json|.md`` and PNG figures; returns the :class:`Report`.

    Every metric is shown with its 95% interval over users; the last column is the paired
    difference in NDCG@10 against the best baseline of this run (on the same users), so a
    reader sees at once whether the model beats it by more than the interval. ``command``
    (the command line that made the report) is recorded with the date.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{task.source}-{task.target}"
    results = {n: r.result for n, r in runs.items() if r.error is None}
    failed = {n: r.error for n, r in runs.items() if r.error is not None}
    notes = {n: r.notes for n, r in runs.items() if r.error is None}
    if not results:
        raise ValueError(f"{task.label}: every method failed ({'; '.join(f'{n}: {e}' for n, e in failed.items())})")
    reference = best_baseline(results)
    metrics = [m for m in METRICS + list(SAMPLED_METRICS) if m in next(iter(results.values())).values]
    table = compare_table(results, metrics, reference=reference,
                          with_ci=("ndcg@10", *[m for m in metrics if m != "ndcg@10"]))
    table.rows += [[n, "failed"] + ["-"] * (len(table.header) - 2) for n in failed]
    report = Report(
        task.label, _intro(task, reference), datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command, table, bucket_table(results), tuning_table(notes), {n: r.seconds for n, r in runs.items()},
        output_dir / f"{stem}.md", output_dir / f"{stem}.json", tuning_budget=tuning_budget, failed=failed,
        slices=slice_tables(results), trials=trials_table(notes))
    _write_data(report, task, runs, reference)
    report.figures = _plot(results, interest_map, output_dir, stem, task.label)
    atomic_write_bytes(report.path, report.markdown().encode())
    return report


SLICE_METRICS = ["ndcg@10", "recall@10"]


def slice_results(results: dict[str, EvalResult], name: str) -> dict[str, EvalResult]:
    """Each method's result on the cold-item slice ``name`` (methods without it left out)."""
    return {n: r.slices[name] for n, r in results.items() if name in r.slices}


def slice_tables(results: dict[str, EvalResult]) -> dict[str, Table]:
    """Per cold-item slice (:data:`SLICES`) with users: NDCG@10 and Recall@10 of each method
    with 95% intervals, and the paired difference in NDCG@10 against the best baseline on
    that slice (named in the column); the users of the slice in the first column's header."""
    out = {}
    for name in SLICES:
        part = slice_results(results, name)
        if part:
            table = compare_table(part, SLICE_METRICS, with_ci=tuple(SLICE_METRICS), reference=best_baseline(part))
            table.header[0] = f"method ({len(next(iter(part.values())).users)} users)"
            out[name] = table
    return out


def _intro(task: ColdStartTask, reference: str | None) -> str:
    text = (f"{len(task.test_users)} test users, full ranking over {task.n_items[task.target]} "
            f"{task.target} items; mean [95% bootstrap interval over users]"
            + (f"; Δ: paired difference against the best baseline, {reference}" if reference else "") + ".")
    return text + ("" if not task.protocol else f" Protocol: {describe_protocol(task)}.")


def describe_protocol(task: ColdStartTask) -> str:
    """The protocols applied to ``task``, in words (empty when none)."""
    p, parts = task.protocol, []
    if "overlap_fraction" in p:
        parts.append(f"overlap fraction {p['overlap_fraction']:g} (seed {p['overlap_seed']}): "
                     f"{p['linked_users']} overlapping training users stay linked, {p['unlinked_users']} "
                     f"are split into a source and a target user")
    if "cold_items" in p:
        parts.append(f"cold items {p['cold_items']:g} (seed {p['cold_items_seed']}): {p['cold_items_valid']} "
                     f"validation and {p['cold_items_test']} test cold {task.target} items have no training "
                     f"interaction; a user of a slice has ground truth in it "
                     f"({p['valid_users_left_out']} valid users had none left and are left out)")
    return "; ".join(parts)


def _write_data(report: Report, task: ColdStartTask, runs: dict[str, MethodRun],
                reference: str | None) -> None:
    """The report's JSON and each method's per-user results beside it."""
    results = {n: r.result for n, r in runs.items() if r.error is None}
    doc = {"task": task.label, "synthetic": task.synthetic, "test_users": len(task.test_users),
           "command": report.command, "date": report.made, "best_baseline": reference,
           "tuning_budget": report.tuning_budget,
           "tuning": {n: t for n, r in runs.items() if r.error is None and (t := tuning_of(r.notes)) is not None},
           "protocol": _jsonable(task.protocol),
           "methods": {n: {"failed": r.error, "seconds": round(r.seconds, 1)} if r.error is not None else
                       {"summary": {m: vars(i) for m, i in r.result.summary().items()},
                        "seconds": round(r.seconds, 1), "notes": _jsonable(r.notes)}
                       for n, r in runs.items()},
           "slices": {}}
    for name in report.slices:
        part = slice_results(results, name)
        best = best_baseline(part)
        doc["slices"][name] = {
            "what": SLICES[name], "users": len(next(iter(part.values())).users), "best_baseline": best,
            "methods": {n: {"summary": {m: vars(i) for m, i in r.summary().items()},
                            "delta_ndcg@10": None if best is None else
                            vars(paired_difference(r.values["ndcg@10"], part[best].values["ndcg@10"]))}
                        for n, r in part.items()}}
    atomic_write_bytes(report.json_path, json.dumps(doc, indent=1).encode())
    stem = report.json_path.stem
    for name, r in results.items():
        r.to_json(report.json_path.with_name(f"{stem}.{name}.users.json"))


def _plot(results: dict[str, EvalResult], interest_map: dict[str, np.ndarray] | None,
          output_dir: Path, stem: str, label: str) -> list[Path]:
    from multimodal_interest.plots import plot_buckets, plot_interest_map, plot_methods

    figures = [plot_methods(results, output_dir / f"{stem}-ndcg10.png", title=label),
               plot_buckets(results, output_dir / f"{stem}-by-history.png", title=label)]
    if interest_map:
        figures.append(plot_interest_map(interest_map, output_dir / f"{stem}-interest-map.png",
                                         title=f"interest vectors, {label}"))
    return figures


def _jsonable(x):
    return json.loads(json.dumps(x, default=str))
