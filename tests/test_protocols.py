"""Evaluation protocols: unlinking overlapping users (--overlap-fraction), cold target items
(--cold-items), the cold-item slices of the evaluator and the report, the learning curve."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _tasks import make_task, planted_task

from multimodal_interest import experiment
from multimodal_interest.cli import main
from multimodal_interest.data.protocols import Protocol, make_items_cold, parse_fractions, unlink_users
from multimodal_interest.evaluate import SLICES, EvalResult, ItemSlices, evaluate
from multimodal_interest.experiment import MODEL, run_methods, write_report
from multimodal_interest.training import ItemFeatures
from newcomer_sample import write_sample


@pytest.fixture(scope="module")
def planted():
    return planted_task()


def _pairs(frame: pd.DataFrame) -> list[tuple]:
    return sorted(map(tuple, frame[["platform", "item_idx", "timestamp", "weight"]].astype(str).to_numpy()))


def test_unlinking_keeps_every_row_and_the_held_out_users(planted):
    task, _ = planted
    overlap = task.overlap_users()
    out = unlink_users(task, 0.3, seed=4)
    assert _pairs(out.train) == _pairs(task.train)  # every row kept
    src = out.train[out.train["platform"] == "src"].reset_index(drop=True)
    assert src.equals(task.train[task.train["platform"] == "src"].reset_index(drop=True))  # source ids kept
    assert out.holdout.equals(task.holdout)
    assert np.array_equal(out.valid_users, task.valid_users) and np.array_equal(out.test_users, task.test_users)
    linked = out.overlap_users()
    assert len(linked) == round(0.3 * len(overlap)) and np.isin(linked, overlap).all()
    unlinked = len(overlap) - len(linked)
    assert out.n_users == task.n_users + unlinked
    moved = out.train[out.train["user_idx"] >= task.n_users]
    assert moved["platform"].eq("tgt").all() and moved["user_idx"].nunique() == unlinked
    # an unlinked user's target rows all went to one new user, in the same time order
    old = task.train[(task.train["platform"] == "tgt") & ~task.train["user_idx"].isin(linked)]
    for (_, a), (_, b) in zip(old.groupby("user_idx"), moved.groupby("user_idx")):
        assert a["item_idx"].tolist() == b["item_idx"].tolist()
    assert out.train["user_idx"].is_monotonic_increasing
    assert out.protocol == {"overlap_fraction": 0.3, "overlap_seed": 4, "linked_users": len(linked),
                            "unlinked_users": unlinked}
    assert out.split == "s0+overlap0.3-seed4" and "overlap0.3-seed4" in out.label
    assert task.n_users == 1200 and "overlap_fraction" not in task.protocol  # the input is untouched


def test_overlap_one_is_the_identity_and_zero_leaves_no_shared_user(planted):
    task, _ = planted
    assert unlink_users(task, 1.0) is task and Protocol().apply(task) is task
    none = unlink_users(task, 0.0)
    assert len(none.overlap_users()) == 0 and len(none.train) == len(task.train)
    assert none.n_users == task.n_users + len(task.overlap_users())
    assert none.protocol["linked_users"] == 0


def test_unlinking_is_seeded(planted):
    task, _ = planted
    a, b, c = unlink_users(task, 0.5, 1), unlink_users(task, 0.5, 1), unlink_users(task, 0.5, 2)
    assert a.train.equals(b.train) and np.array_equal(a.overlap_users(), b.overlap_users())
    assert not np.array_equal(a.overlap_users(), c.overlap_users())


def test_out_of_range_values_are_refused_naming_the_flag(planted):
    task, _ = planted
    with pytest.raises(ValueError, match=r"--overlap-fraction 1.5 is out of range: need 0 <= f <= 1"):
        unlink_users(task, 1.5)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match=rf"--cold-items {bad:g} is out of range: need 0 < F < 1"):
            make_items_cold(task, bad)
    with pytest.raises(ValueError, match="--overlap-fraction '0,x'"):
        parse_fractions("0,x")
    assert parse_fractions("0,0.01,1") == [0.0, 0.01, 1.0]
    within = make_task([(0, "a", 1), (0, "a", 2), (1, "a", 1), (1, "a", 3)], {"a": 4}, [], [1], "a", "a")
    with pytest.raises(ValueError, match="within-platform task"):
        unlink_users(within, 0.5)


@pytest.mark.parametrize("name", ["ease", "ease-merged"])
def test_a_method_of_shared_users_still_scores_with_none(planted, name):
    """With no overlapping training user, EASE has nothing to regress on: it ranks by its
    popularity prior instead of failing."""
    from multimodal_interest.baselines import create_baseline

    task = unlink_users(planted[0], 0.0)
    model = create_baseline(name, lam=100.0).fit(task)
    scores = model.score(task.test_users[:5])
    assert torch.isfinite(scores).all() and torch.equal(scores, model.prior.expand_as(scores).to(scores.dtype))


def test_cold_items_lose_every_training_row_and_split_in_halves(planted):
    task, _ = planted
    out = make_items_cold(task, 0.2, seed=3)
    valid, test = out.valid_cold_items, out.test_cold_items
    assert len(valid) == 20 and len(test) == 20 and not np.intersect1d(valid, test).size  # 20% of 200
    assert np.array_equal(out.cold_items, np.union1d(valid, test))
    on_target = out.train[out.train["platform"] == "tgt"]
    assert not on_target["item_idx"].isin(out.cold_items).any()
    assert len(task.train) - len(out.train) == task.train[task.train["platform"] == "tgt"]["item_idx"].isin(
        out.cold_items).sum()  # nothing else removed
    vh = out.holdout[out.holdout["user_idx"].isin(out.valid_users)]
    assert not vh["item_idx"].isin(test).any() and vh["item_idx"].isin(valid).any()  # validation: valid cold only
    th = out.holdout[out.holdout["user_idx"].isin(out.test_users)].reset_index(drop=True)
    assert th.equals(task.holdout[task.holdout["user_idx"].isin(task.test_users)].reset_index(drop=True))
    assert np.array_equal(out.test_users, task.test_users)
    assert set(out.target_truth(out.valid_users)[0]) <= set(task.target_truth(out.valid_users)[0])
    again = make_items_cold(task, 0.2, seed=3)
    assert np.array_equal(again.test_cold_items, test) and again.train.equals(out.train)
    assert not np.array_equal(make_items_cold(task, 0.2, seed=4).test_cold_items, test)
    assert out.split == "s0+cold-items0.2-seed3"


def test_cold_items_within_one_platform_remove_the_history_rows_too():
    rows = [(u, "a", i) for u in range(6) for i in range(u % 3, u % 3 + 4)]
    task = make_task(rows, {"a": 8}, valid=[4], test=[5], source="a", target="a")
    out = make_items_cold(task, 0.5, seed=0)
    assert not out.train["item_idx"].isin(out.cold_items).any()
    assert len(out.cold_items) == 3  # half of the 6 items with interactions, rounded half up


def _slices_task():
    """Test users 6 (held out: 1 warm, 7 cold) and 7 (held out: 2 warm, 3 a valid cold item:
    neither cold for the test nor warm); cold items 7, 8 (test) and 3 (valid)."""
    rows = [(u, "src", u % 3) for u in range(8)] + [(u, "tgt", u % 5) for u in range(6)]
    rows += [(6, "tgt", 1), (6, "tgt", 7), (7, "tgt", 2), (7, "tgt", 3)]
    task = make_task(rows, {"src": 3, "tgt": 10}, valid=[], test=[6, 7])
    return dataclasses.replace(task, valid_cold_items=np.array([3]), test_cold_items=np.array([7, 8]), _truth={})


def _fixed(scores: list[float]):
    return lambda users: torch.tensor(scores, dtype=torch.float64).expand(len(users), -1)


def test_slices_of_a_hand_made_scorer():
    task = _slices_task()
    # ranking: 8, 7, 1, 2, 3, 0, 4, ... (for user 7, 3 ranks 5th)
    result = evaluate(_fixed([0, 5, 4, 1, 0, 0, 0, 9, 10, 0]), task, task.test_users, ks=(10,),
                      slices=ItemSlices.for_test(task))
    log2 = np.log2
    assert result.values["ndcg@10"][0] == pytest.approx((1 / log2(3) + 1 / log2(4)) / (1 + 1 / log2(3)))
    cold, warm, among = (result.slices[s] for s in ("cold", "warm", "cold-candidates"))
    assert cold.users.tolist() == [6] and among.users.tolist() == [6]  # user 7 has no cold item: left out
    assert cold.values["ndcg@10"] == pytest.approx([1 / log2(3)]) and cold.values["recall@10"].tolist() == [1.0]
    assert cold.values["mrr"] == pytest.approx([1 / 2])
    assert warm.users.tolist() == [6, 7] and warm.values["ndcg@10"] == pytest.approx([1 / log2(4), 1 / log2(5)])
    assert among.values["ndcg@10"] == pytest.approx([1 / log2(3)])  # 8 before 7 among the cold items
    first = evaluate(_fixed([0, 5, 4, 1, 0, 0, 0, 10, 9, 0]), task, task.test_users, ks=(10,),
                     slices=ItemSlices.for_test(task))
    assert first.slices["cold-candidates"].values["ndcg@10"].tolist() == [1.0]
    assert evaluate(_fixed([0.0] * 10), task, task.test_users).slices == {}  # no slices unless asked


def test_slices_survive_the_results_file(tmp_path):
    task = _slices_task()
    result = evaluate(_fixed([0, 5, 4, 1, 0, 0, 0, 9, 10, 0]), task, task.test_users,
                      slices=ItemSlices.for_test(task))
    result.to_json(tmp_path / "r.json")
    back = EvalResult.from_json(tmp_path / "r.json")
    assert set(back.slices) == set(SLICES)
    for name, part in result.slices.items():
        assert np.array_equal(back.slices[name].users, part.users)
        assert np.allclose(back.slices[name].values["ndcg@10"], part.values["ndcg@10"])


def test_an_oracle_of_the_cold_items_is_perfect_on_the_cold_slices(planted):
    task = make_items_cold(planted[0], 0.2, seed=0)
    cold = set(task.test_cold_items.tolist())
    truth = {int(u): [i for i in t if i in cold] for u, t in zip(task.test_users, task.target_truth(task.test_users))}

    def oracle(users):
        scores = torch.zeros(len(users), task.n_items["tgt"])
        for row, u in enumerate(users):
            scores[row, truth[int(u)]] = 1.0
        return scores

    result = evaluate(oracle, task, task.test_users, slices=ItemSlices.for_test(task))
    assert len(result.slices["cold"].users) == sum(map(bool, truth.values())) > 10
    for name in ("cold", "cold-candidates"):
        assert np.allclose(result.slices[name].values["ndcg@10"], 1.0)
    assert result.slices["warm"].values["ndcg@10"].mean() < 0.5


def _features(vectors):
    return ItemFeatures(vectors={p: {"text": v} for p, v in vectors.items()},
                        present={p: {"text": torch.ones(len(v), dtype=torch.bool)} for p, v in vectors.items()},
                        fingerprints={"text": "test"})


def test_the_report_shows_the_slices_and_a_failed_method(planted, tmp_path, monkeypatch, caplog):
    base, vectors = planted
    task = Protocol(overlap_fraction=0.5, cold_items=0.2).apply(base)

    def no_model(*args, **kwargs):
        raise ValueError("no training user has items on both platforms")

    monkeypatch.setattr(experiment, "_interest_model", no_model)
    runs = run_methods(task, ["popularity", "content-knn", MODEL], _features(vectors), tmp_path, progress=False)
    assert runs[MODEL].error == "ValueError: no training user has items on both platforms"
    report = write_report(task, runs, tmp_path / "report")
    text = report.path.read_text()
    for what in SLICES.values():
        assert what in text
    assert f"| {MODEL} | failed |" in text and "no training user has items on both platforms" in text
    assert "cold items 0.2" in text and "overlap fraction 0.5" in text
    for name, table in report.slices.items():
        users = len(runs["popularity"].result.slices[name].users)
        assert table.header[0] == f"method ({users} users)" and table.header[-1].startswith("Δ ndcg@10 vs ")
        assert [r[0] for r in table.rows] == ["popularity", "content-knn"] and all("[" in c for c in table.rows[0][1:])
    doc = json.loads(report.json_path.read_text())
    assert doc["protocol"]["cold_items"] == 0.2 and doc["protocol"]["overlap_fraction"] == 0.5
    assert doc["methods"][MODEL] == {"failed": runs[MODEL].error, "seconds": 0.0}
    assert set(doc["slices"]) == set(SLICES)
    best = doc["slices"]["cold-candidates"]["best_baseline"]
    assert doc["slices"]["cold-candidates"]["methods"][best]["delta_ndcg@10"]["mean"] == 0.0
    users = json.loads((tmp_path / "report" / "src-tgt.content-knn.users.json").read_text())
    assert set(users["slices"]) == set(SLICES)
    # the result cache is keyed by the protocol: in the same folder, another fraction is computed again
    caplog.set_level("INFO", logger="multimodal_interest.experiment")
    run_methods(Protocol(overlap_fraction=0.6, cold_items=0.2).apply(base), ["popularity"], _features(vectors),
                tmp_path, progress=False)
    assert "popularity: saved with other data, settings or code; computed again" in caplog.text
    caplog.clear()
    run_methods(task, ["popularity"], _features(vectors), tmp_path / "again", progress=False)
    run_methods(task, ["popularity"], _features(vectors), tmp_path / "again", progress=False)
    assert "popularity: done in an earlier run" in caplog.text


@pytest.fixture(scope="module")
def dataset(shared_data: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("protocols")
    files = write_sample(shared_data, folder, n_train=60, n_valid=12, n_test=12)
    dst = folder / "data"
    assert main(["-q", "import", "csv", str(files["interactions"]), str(dst), "--split-column", "split"]) == 0
    return dst


def test_the_learning_curve_writes_its_table_and_figure(dataset: Path, tmp_path: Path, capsys):
    out = tmp_path / "curve"
    args = ["-q", "evaluate", str(dataset), "--source", "art", "--target", "office", "--split", "given",
            "--methods", "popularity,item-knn", "--tuning-budget", "1", "--output", str(out)]
    assert main([*args, "--overlap-fraction", "0,0.5,1"]) == 0
    doc = json.loads((out / "art-office-overlap-curve.json").read_text())
    assert doc["fractions"] == [0.0, 0.5, 1.0] and doc["linked_users"][0] == 0
    assert doc["linked_users"][1] < doc["linked_users"][2]
    assert set(doc["methods"]) == {"popularity", "item-knn"} and all(len(v) == 3 for v in doc["methods"].values())
    assert (out / "art-office-overlap-curve.png").stat().st_size > 1000
    assert "| method | f = 0 (0 linked users) |" in (out / "art-office-overlap-curve.md").read_text()
    for f in ("0", "0.5", "1"):
        report = json.loads((out / f"overlap-{f}" / "art-office.json").read_text())
        assert report["protocol"].get("overlap_fraction", 1.0) == float(f)
    # item kNN learns nothing across platforms without shared users: it falls to popularity
    ndcg = {n: [p["mean"] for p in v] for n, v in doc["methods"].items()}
    assert ndcg["item-knn"][0] == pytest.approx(ndcg["popularity"][0])
    assert main([*args, "--overlap-fraction", "0,2"]) == 2
    assert "--overlap-fraction 2 is out of range" in capsys.readouterr().err


def test_a_split_records_its_protocol_for_every_command(dataset: Path, tmp_path: Path, capsys):
    assert main(["-q", "split", str(dataset), "--ratio", "0.2", "--seed", "900", "--overlap-fraction", "0.5",
                 "--cold-items", "0.2"]) == 0
    name = "cold20_seed900+cold-items0.2-seed0+overlap0.5-seed0"
    meta = json.loads((dataset / "splits" / f"{name}.json").read_text())
    assert meta["protocol"] == {"overlap_fraction": 0.5, "cold_items": 0.2, "seed": 0}
    out = tmp_path / "ev"
    args = ["-q", "evaluate", str(dataset), "--source", "art", "--target", "office", "--split", name,
            "--methods", "popularity", "--output", str(out)]
    assert main(args) == 0
    report = json.loads((out / "art-office.json").read_text())
    assert report["protocol"]["overlap_fraction"] == 0.5 and report["protocol"]["cold_items"] == 0.2
    assert report["task"].endswith(f"({name})")  # the tags are not added twice
    assert set(report["slices"]) <= set(SLICES) and report["slices"]
    capsys.readouterr()
    assert main([*args, "--cold-items", "0.3"]) == 2
    assert "--cold-items disagrees with the protocol the split records" in capsys.readouterr().err
