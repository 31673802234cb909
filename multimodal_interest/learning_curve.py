"""The overlap learning curve: each method's NDCG@10 as fewer overlapping users stay linked.

``mmi evaluate --overlap-fraction 0,0.01,0.05,0.2,1`` evaluates every method at each
fraction (:func:`multimodal_interest.data.protocols.unlink_users`) and
:func:`write_learning_curve` gathers the results: a table (Markdown and JSON) and a PNG.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.evaluate import Table
from multimodal_interest.stats import Interval, bootstrap
from multimodal_interest.store import atomic_write_bytes

METRIC = "ndcg@10"


@dataclass
class LearningCurve:
    """``metric`` of each method at each overlap fraction (ascending)."""

    title: str  # the task's label without the protocol
    metric: str
    fractions: list[float]
    linked_users: list[int]  # [F] overlapping training users still linked at each fraction
    points: dict[str, list[Interval | None]]  # method -> [F] mean [95%] (None: failed or not run)
    failed: dict[str, dict[float, str]]  # method -> fraction -> why it failed

    @classmethod
    def from_runs(cls, title: str, runs: list[tuple[ColdStartTask, dict]], metric: str = METRIC) -> LearningCurve:
        """From ``(task, {method: MethodRun})`` per fraction (as :func:`run_methods` returns)."""
        runs = sorted(runs, key=lambda tr: _fraction(tr[0]))
        methods = list(dict.fromkeys(n for _, per in runs for n in per))
        points = {n: [None if n not in per or per[n].error else bootstrap(per[n].result.values[metric])
                      for _, per in runs] for n in methods}
        failed = {n: {_fraction(t): per[n].error for t, per in runs if n in per and per[n].error}
                  for n in methods}
        return cls(title, metric, [_fraction(t) for t, _ in runs],
                   [int(t.protocol.get("linked_users", len(t.overlap_users()))) for t, _ in runs],
                   points, {n: f for n, f in failed.items() if f})

    def table(self) -> Table:
        """One row per method, one column per fraction (its linked users in the header)."""
        header = ["method"] + [f"f = {f:g} ({n} linked users)" for f, n in zip(self.fractions, self.linked_users)]
        rows = [[name] + [("failed" if f in self.failed.get(name, {}) else "-") if p is None else p.format()
                          for f, p in zip(self.fractions, pts)]
                for name, pts in self.points.items()]
        return Table(header, rows)

    def markdown(self) -> str:
        lines = [f"## {self.title}: {self.metric} by overlap fraction", "",
                 f"f: the share of overlapping training users that stay linked (the others are split "
                 f"into a source and a target user); mean [95% bootstrap interval over test users].", "",
                 self.table().markdown(), ""]
        for name, per in self.failed.items():
            lines += [f"- {name} failed at f = {f:g}: {why}" for f, why in per.items()]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {"task": self.title, "metric": self.metric, "fractions": self.fractions,
                "linked_users": self.linked_users,
                "methods": {n: [None if p is None else vars(p) for p in pts] for n, pts in self.points.items()},
                "failed": {n: {f"{f:g}": why for f, why in per.items()} for n, per in self.failed.items()}}


def _fraction(task: ColdStartTask) -> float:
    return float(task.protocol.get("overlap_fraction", 1.0))


def fraction_folder(output_dir: Path, fraction: float) -> Path:
    """Where the learning curve's run at ``fraction`` writes: ``<output>/overlap-<f>``."""
    return Path(output_dir) / f"overlap-{fraction:g}"


def write_learning_curve(curve: LearningCurve, output_dir: Path, stem: str) -> list[Path]:
    """``<output>/<stem>-overlap-curve.md``, ``.json`` and ``.png``; returns their paths."""
    from multimodal_interest.plots import plot_learning_curve

    base = Path(output_dir) / f"{stem}-overlap-curve"
    md, js = base.with_suffix(".md"), base.with_suffix(".json")
    png = plot_learning_curve(curve, base.with_suffix(".png"))
    atomic_write_bytes(md, (curve.markdown() + f"\n![{png.stem}]({png.name})\n").encode())
    atomic_write_bytes(js, json.dumps(curve.to_json(), indent=1).encode())
    return [md, js, png]
