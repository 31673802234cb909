"""What each method of an ``mmi evaluate`` run tried, and what judged it: the report's tuning.

Every tuned method's notes hold ``trials`` (one dict per setting tried: its options, then
``valid_ndcg10`` and, where fit users left out judged it too, ``left_out_ndcg10``) and
``tuning``: ``{"settings": n, "judged_by": words, "chosen": options}``. The baselines' come
from :func:`multimodal_interest.baselines.tune`; the interest model's from its run's log
(:func:`model_tuning`): the linear fit logs each setting of its search, a transformer is one
setting stopped early.
"""
from __future__ import annotations

from multimodal_interest.evaluate import Table
from multimodal_interest.training.closed_form.validate import LEFT_OUT_ROWS

SCORES = ("valid_ndcg10", "left_out_ndcg10")  # what judged a trial; the rest of its dict is the setting


def setting_of(trial: dict) -> dict:
    """A trial's options, without its scores."""
    return {k: v for k, v in trial.items() if k not in SCORES}


def describe(setting: dict) -> str:
    """``"lam=100, k=None"``; ``"defaults"`` for an empty setting."""
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "defaults"


def searched(trials: list[dict], judged_by: str) -> dict:
    """The notes of a method that kept its best trial on the validation users."""
    best = max(trials, key=lambda t: t["valid_ndcg10"])
    return {"trials": trials, "tuning": {"settings": len(trials), "judged_by": judged_by, "chosen": setting_of(best)}}


def model_tuning(log: list[dict], n_valid: int) -> dict:
    """The interest model's ``trials`` and ``tuning`` from its run's log rows (``log.jsonl``).

    A linear fit's log is one row per setting tried, then a row with ``chosen`` (the setting
    kept) and ``fit`` (rows, users, the search's optimism); its search judges each setting on
    the validation users and a seeded sample of fit users left out, its last step (the saved
    model's rank and lam) on the validation users alone. A transformer's log is one row per
    epoch: one setting (its config), stopped early on the validation users.
    """
    if log and "chosen" in log[-1]:
        last, trials = log[-1], [dict(r) for r in log[:-1]]
        fit = last.get("fit") or {}
        left = (f"{fit['left_out_users']} sampled fit users left out" if fit.get("left_out_users")
                else f"a seeded sample of fit users left out (at most {LEFT_OUT_ROWS:,} fit rows)")
        judged = (f"NDCG@10 of the {n_valid} validation users + {left} (the search); the "
                  f"{n_valid} validation users alone (the saved model's rank and lam)")
        if fit.get("optimism") is not None:
            judged += f"; optimism of a choice on half the validation users {fit['optimism']:+.4f}"
        tuning = {"settings": len(trials), "judged_by": judged, "chosen": setting_of(last["chosen"]),
                  "fit": fit}
        return {"trials": trials, "tuning": tuning}
    scored = [r for r in log if "valid_ndcg10" in r]
    if not scored:
        return {}
    best = max(scored, key=lambda r: r["valid_ndcg10"])
    trial = {"setting": "the run's config", "best_epoch": best.get("epoch"), "epochs": len(scored),
             "valid_ndcg10": best["valid_ndcg10"]}
    judged = f"NDCG@10 of the {n_valid} validation users (one setting, stopped early on them)"
    return {"trials": [trial], "tuning": {"settings": 1, "judged_by": judged, "chosen": setting_of(trial)}}


def tuning_of(notes: dict) -> dict | None:
    """``notes["tuning"]``, or for notes saved before it was recorded, what their trials say
    (the best on the validation users, which alone judged them); None without trials."""
    trials = notes.get("trials")
    if not trials:
        return None
    if "tuning" in notes:
        return notes["tuning"]
    return searched(trials, "NDCG@10 of the validation users")["tuning"]


def tuning_table(notes: dict[str, dict]) -> Table:
    """One row per tuned method (``notes``: method -> its notes): how many settings it
    tried, what judged them, the one it kept and its validation NDCG@10."""
    rows = []
    for name, n in notes.items():
        tuning = tuning_of(n)
        if tuning is None:
            continue
        chosen = _chosen_trial(n["trials"], tuning["chosen"])
        value = "-" if chosen is None else f"{chosen['valid_ndcg10']:.4f}"
        rows.append([name, str(tuning["settings"]), tuning["judged_by"], describe(tuning["chosen"]), value])
    return Table(["method", "settings", "judged by", "chosen", "valid NDCG@10"], rows)


def trials_table(notes: dict[str, dict]) -> Table:
    """Every trial of every tuned method, in the order tried; the kept one marked."""
    rows = []
    for name, n in notes.items():
        tuning = tuning_of(n)
        if tuning is None:
            continue
        kept = _chosen_trial(n["trials"], tuning["chosen"])
        for i, t in enumerate(n["trials"], 1):
            left = t.get("left_out_ndcg10")
            rows.append([name, str(i), describe(setting_of(t)), f"{t['valid_ndcg10']:.4f}",
                         "-" if left is None else f"{left:.4f}", "kept" if t is kept else ""])
    return Table(["method", "trial", "setting", "valid NDCG@10", "fit users left out NDCG@10", ""], rows)


def _chosen_trial(trials: list[dict], chosen: dict) -> dict | None:
    """The last trial with the chosen setting (a setting scored twice: its final score)."""
    found = [t for t in trials if setting_of(t) == chosen]
    return found[-1] if found else None
