"""Honest tuning budgets: the settings a budget gives each baseline, and the report's record
of every method's trials (the interest model's included) and of what judged them."""
from __future__ import annotations

import json

import pytest
from synthetic import synthetic_task

from multimodal_interest.baselines import BASELINES, DEFAULT_BUDGET, create_baseline, tune, tuning_settings
from multimodal_interest.baselines.base import Baseline, register_baseline
from multimodal_interest.baselines.popularity import NoOptions
from multimodal_interest.baselines.space import Choice, LogUniform, Uniform, draw_settings, outside_space
from multimodal_interest.experiment import MODEL, run_methods, write_report
from multimodal_interest.run import Run
from multimodal_interest.tuning import model_tuning, trials_table, tuning_table

# the grids every baseline tried before budgets beyond 4 existed (2026-12): budget 4 keeps them
TODAYS_GRIDS = {
    "ease": [{"lam": 10.0}, {"lam": 100.0}, {"lam": 1000.0}, {"lam": 10000.0}],
    "rp3beta": [{"alpha": 1.0, "beta": 0.0}, {"alpha": 0.5, "beta": 0.0}, {"alpha": 0.25, "beta": 0.0},
                {"alpha": 0.5, "beta": 0.25}],
    "item-knn": [{"source_exp": 0.0, "target_exp": 0.0, "shrink": 0.0, "power": 1.0, "k": None},
                 {"source_exp": 0.5, "target_exp": 0.0, "shrink": 10.0, "power": 1.0, "k": None},
                 {"source_exp": 0.5, "target_exp": 0.25, "shrink": 10.0, "power": 2.0, "k": None},
                 {"source_exp": 0.5, "target_exp": 0.5, "shrink": 10.0, "power": 1.0, "k": 200}],
    "ials": [{"factors": 32, "regularization": 0.1, "alpha": 10.0}, {"factors": 16, "regularization": 0.1, "alpha": 10.0},
             {"factors": 64, "regularization": 0.1, "alpha": 10.0}, {"factors": 32, "regularization": 1.0, "alpha": 10.0}],
    "popularity": [{}],
}


@pytest.mark.parametrize("name", sorted(TODAYS_GRIDS))
def test_the_default_budget_is_todays_grid(name):
    assert tuning_settings(name) == tuning_settings(name, DEFAULT_BUDGET) == TODAYS_GRIDS[name]
    assert tuning_settings(name, 2) == TODAYS_GRIDS[name][:2]


@pytest.mark.parametrize("name", sorted(n for n in BASELINES if BASELINES[n].space))
def test_a_budget_beyond_the_grid_draws_distinct_seeded_settings_in_the_space(name):
    cls = BASELINES[name]
    got = tuning_settings(name, 12)
    assert len(got) == 12 and got[:len(cls.grid)] == cls.grid  # the grid first
    assert len({json.dumps(s, sort_keys=True) for s in got}) == 12  # distinct
    for setting in got[len(cls.grid):]:
        assert set(setting) == set(cls.space) and outside_space(setting, cls.space) == []
        create_baseline(name, **setting)  # a valid configuration of the method
    assert tuning_settings(name, 12) == got  # deterministic for a seed ...
    assert tuning_settings(name, 8) == got[:8]  # ... a larger budget extends a smaller one
    other = draw_settings(name, cls.grid, cls.space, 12, seed=1)
    assert other[:len(cls.grid)] == cls.grid and other[len(cls.grid):] != got[len(cls.grid):]


def test_a_method_without_options_has_one_setting_and_a_budget_below_one_is_refused():
    assert tuning_settings("popularity", 20) == [{}]
    with pytest.raises(ValueError, match="tuning budget must be >= 1, got 0"):
        tuning_settings("ease", 0)


def test_the_space_draws_within_its_ranges_and_says_what_it_is():
    space = {"k": Choice((None, LogUniform(5, 2000, integer=True))), "x": Uniform(0.0, 1.0)}
    drawn = draw_settings("t", [], space, 200)
    ks = [s["k"] for s in drawn]
    assert None in ks and all(k is None or (isinstance(k, int) and 5 <= k <= 2000) for k in ks)
    assert all(0.0 <= s["x"] <= 1.0 for s in drawn)
    assert outside_space({"k": 3}, space) == ["k=3"] and outside_space({"y": 1}, space) == ["y=1"]
    assert space["k"].describe() == "None or log-uniform integer in [5, 2000]"


def test_a_grid_outside_its_documented_space_is_refused():
    class Bad(Baseline):
        name = "bad-grid"
        Config = NoOptions
        grid = [{"lam": 0.5}]
        space = {"lam": LogUniform(1.0, 10.0)}

    with pytest.raises(ValueError, match=r"bad-grid: grid setting \{'lam': 0.5\} is outside its space"):
        register_baseline(Bad)
    assert "bad-grid" not in BASELINES


def test_tune_tries_every_setting_of_a_larger_budget_and_keeps_the_best():
    task, _ = synthetic_task()
    settings = tuning_settings("ease", 7)
    tuned = tune("ease", task, grid=settings)
    assert [options for options, _ in tuned.trials] == settings
    best = max(tuned.trials, key=lambda t: t[1])
    assert tuned.model.config.lam == best[0]["lam"]


def test_the_report_lists_the_interest_models_trials_and_what_judged_them(tmp_path):
    task, features = synthetic_task()
    runs = run_methods(task, [MODEL, "ease"], features, tmp_path, progress=False, tuning_budget=6)
    report = write_report(task, runs, tmp_path / "report", tuning_budget=6)
    log = Run.for_task(tmp_path, task.source, task.target).log()
    model_rows = [r for r in report.trials.rows if r[0] == MODEL]
    assert len(model_rows) == len(log) - 1 > 6  # every setting of the linear fit's search
    assert sum(r[-1] == "kept" for r in model_rows) == 1
    assert [r[3] for r in model_rows] == [f"{row['valid_ndcg10']:.4f}" for row in log[:-1]]
    searched = [r for r in model_rows if r[4] != "-"]
    assert searched and all(r[4] == f"{row['left_out_ndcg10']:.4f}" for r, row in zip(model_rows, log) if r[4] != "-")
    summary = {r[0]: r for r in report.tuning.rows}
    n_valid = len(task.valid_users)
    assert summary[MODEL][1] == str(len(log) - 1)
    assert summary[MODEL][2].startswith(f"NDCG@10 of the {n_valid} validation users + ") and "left out" in summary[MODEL][2]
    assert summary["ease"][1] == "6" and summary["ease"][2] == f"NDCG@10 of the {n_valid} validation users"
    text = report.path.read_text()
    assert "at most 6 settings" in text and "random draws" in text and report.trials.markdown() in text
    assert "same budget" not in text and "stops early" not in text
    doc = json.loads(report.json_path.read_text())
    assert doc["tuning_budget"] == 6 and doc["tuning"][MODEL]["settings"] == len(log) - 1
    assert doc["tuning"][MODEL]["chosen"] == {k: v for k, v in log[-1]["chosen"].items()
                                              if k not in ("valid_ndcg10", "left_out_ndcg10")}


def test_a_transformer_is_one_setting_stopped_early():
    log = [{"epoch": 1, "valid_ndcg10": 0.1}, {"epoch": 2, "valid_ndcg10": 0.3}, {"epoch": 3, "valid_ndcg10": 0.2}]
    notes = model_tuning(log, 50)
    assert notes["tuning"]["settings"] == 1 and "stopped early" in notes["tuning"]["judged_by"]
    assert notes["trials"][0]["best_epoch"] == 2 and notes["trials"][0]["valid_ndcg10"] == 0.3
    assert tuning_table({MODEL: notes}).rows[0][4] == "0.3000"
    assert trials_table({MODEL: notes}).rows[0][-1] == "kept"
