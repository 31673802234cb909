"""The search over ``(lam, block weights)``: which settings are tried, and when a step is taken.

``lam`` walks the grid :data:`LAMBDAS` from its middle, up or down while it gains; then each
block's weight is tried at :data:`WEIGHT_STEPS` times its current value (off first: a block
that only adds noise is switched off; the constant, whose coefficients are the prior an empty
history gets, is never off); then ``lam`` once more (/3, x3). A step is taken only when it
beats the best so far on the pooled held-out users (validation users and left-out fit users)
by :data:`STEP_SE` standard errors of the paired per-user difference, *and* gains on each
half of the validation users (:meth:`Trial.beats`). :func:`optimism` reports how much a choice
made on one half of the validation users loses on the other.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from multimodal_interest.training.closed_form.blocks import CONST

log = logging.getLogger("multimodal_interest.training.closed_form")

LAMBDAS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)  # ridge strength, on a kernel of mean diagonal sum(w)
WEIGHT_STEPS = (0.0, 0.25, 4.0)  # each block's weight tried at these multiples of its current one
MIN_GAIN = 1e-4  # validation NDCG@10 a step must add (and STEP_SE standard errors)
STEP_SE = 0.5  # standard errors of the paired per-user difference a step must gain (1 lost real gains)
HALVES_SEED = 7  # how the validation users are cut in two halves (Trial.beats, optimism)


@dataclass
class Trial:
    """One setting tried: NDCG@10 of each validation user and, for the search's settings, of
    each sampled fit user left out of the fit."""

    lam: float
    weights: dict[str, float]
    users: np.ndarray  # [V] each validation user's NDCG@10
    rank: int | None = None  # of the reduced-rank model scored; None: the full kernel ridge
    left_out: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [U] each sampled fit user's, left out
    path: str = "exact"  # "exact" or "nystrom" (the approximate solve over every fit row)

    @property
    def valid_ndcg10(self) -> float:
        return float(np.nanmean(self.users)) if len(self.users) else float("nan")

    @property
    def held_out(self) -> np.ndarray:
        """``[V + U]`` every held-out user's NDCG@10: what the search compares."""
        return np.concatenate([self.users, self.left_out])

    def beats(self, other: Trial) -> bool:
        """Better than ``other`` by more than :data:`MIN_GAIN` and :data:`STEP_SE` standard
        errors of the paired per-user difference over every held-out user, and better on each
        half of the validation users: a change that held-out users cannot tell from noise is
        not taken (greedy steps otherwise fit their noise)."""
        d = self.held_out - other.held_out
        if not float(d.mean()) > max(MIN_GAIN, STEP_SE * float(d.std(ddof=1)) / np.sqrt(len(d))):
            return False
        dv = self.users - other.users
        return all(float(dv[h].mean()) > 0 for h in halves(len(dv)))

    def row(self) -> dict:
        row = {"lam": self.lam, **{f"w_{b}": w for b, w in self.weights.items()}, "rank": self.rank,
               "path": self.path, "valid_ndcg10": round(self.valid_ndcg10, 6)}
        if len(self.left_out):
            row["left_out_ndcg10"] = round(float(self.left_out.mean()), 6)
        return row


def halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two seeded halves of ``range(n)`` (the validation users)."""
    order = np.random.default_rng(HALVES_SEED).permutation(n)
    return order[: n // 2], order[n // 2:]


def search(validate: Callable[[float, dict], tuple[np.ndarray, np.ndarray]],
           blocks: list[str]) -> tuple[Trial, list[Trial]]:
    """``(best, every trial in order)`` (see the module docstring)."""
    trials: list[Trial] = []

    def trial(lam: float, weights: dict[str, float]) -> Trial:
        for t in trials:
            if t.lam == lam and t.weights == weights:
                return t
        valid, left_out = validate(lam, weights)
        t = Trial(lam, dict(weights), valid, left_out=left_out)
        trials.append(t)
        log.info("closed form: lam %g, weights %s: NDCG@10 validation %.4f, fit users left out %.4f",
                 lam, weights, t.valid_ndcg10, float(left_out.mean()) if len(left_out) else float("nan"))
        return t

    def score(t: Trial) -> float:
        return float(t.held_out.mean())

    ones = {b: 1.0 for b in blocks}
    i = len(LAMBDAS) // 2
    best = trial(LAMBDAS[i], ones)
    for step in (1, -1):  # walk up, then down, while the score rises
        j = i + step
        while 0 <= j < len(LAMBDAS):
            t = trial(LAMBDAS[j], ones)
            if score(t) <= score(best):
                break
            best, j = t, j + step
        if best.lam != LAMBDAS[i]:
            break
    for b in blocks:
        for step in WEIGHT_STEPS:
            if b == CONST and step == 0:
                continue  # the intercept stays: it is the prior an empty history gets
            t = trial(best.lam, dict(best.weights, **{b: best.weights[b] * step}))
            if t.beats(best):
                best = t
                break  # the first step that holds is taken; the block's other steps are not tried
    for lam in (best.lam / 3, best.lam * 3):
        t = trial(lam, best.weights)
        if t.beats(best):
            best = t
    return best, trials


def optimism(trials: list[Trial]) -> dict[str, float]:
    """How much choosing on validation users flatters the choice: the search's trials chosen
    again on one half of the validation users (by that half's mean NDCG@10), scored on that
    half and on the other, both ways round. ``optimism`` = mean(chosen half - other half)."""
    scored = [t for t in trials if len(t.users)]
    if not scored or len(scored[0].users) < 4:
        return {}
    a, b = halves(len(scored[0].users))
    gaps, on_other = [], []
    for pick, other in ((a, b), (b, a)):
        chosen = max(scored, key=lambda t: float(np.nanmean(t.users[pick])))
        gaps.append(float(np.nanmean(chosen.users[pick]) - np.nanmean(chosen.users[other])))
        on_other.append(float(np.nanmean(chosen.users[other])))
    return {"optimism": round(float(np.mean(gaps)), 6), "chosen_on_half_scored_on_other": round(float(np.mean(on_other)), 6)}
