"""Metrics, the chunked evaluator, bootstrap intervals and the comparison table."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _tasks import make_task

from multimodal_interest.evaluate import (SAMPLED_METRICS, EvalResult, compare, evaluate, last_target_items,
                                         sample_negatives, summarize)
from multimodal_interest.metrics import compute_metrics, full_ranks, parse_metric, ranks_among
from multimodal_interest.stats import bootstrap, by_bucket, paired_difference


def metrics_of(scores: list[float], truth: list[int], names: list[str]) -> dict[str, float]:
    s = torch.tensor([scores])
    t = torch.tensor([truth])
    ranks = full_ranks(s, t, torch.ones_like(t, dtype=torch.bool))
    return {k: float(v[0]) for k, v in compute_metrics(names, ranks, torch.tensor([len(truth)])).items()}


def test_hand_computed_values():
    # ranking by score: items 0, 4, 2, 3, 1 -> ground truth {2, 1} at ranks 3 and 5
    m = metrics_of([0.9, 0.1, 0.5, 0.3, 0.7], [2, 1], ["recall@2", "ndcg@2", "recall@3", "ndcg@3",
                                                     "recall@5", "ndcg@5", "mrr", "hit@3"])
    idcg2 = 1 + 1 / math.log2(3)
    assert m["recall@2"] == 0 and m["ndcg@2"] == 0  # no hit in the top 2
    assert m["recall@3"] == 0.5 and m["hit@3"] == 1
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(4)) / idcg2)
    assert m["recall@5"] == 1
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(6)) / idcg2)
    assert m["mrr"] == pytest.approx(1 / 3)  # first hit at rank 3, beyond any cut-off


def test_more_ground_truth_than_k_uses_ideal_dcg_of_k():
    # ground truth {0, 4, 2} at ranks 1, 2, 3; k = 2: recall 2/3 but a perfect NDCG@2
    m = metrics_of([0.9, 0.1, 0.5, 0.3, 0.7], [0, 4, 2], ["recall@2", "ndcg@2", "ndcg@3"])
    assert m["recall@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx(1.0)
    assert m["ndcg@3"] == pytest.approx(1.0)


def test_ties_are_ordered_by_item_index():
    scores = [1.0, 1.0, 1.0, 0.0, 1.0]
    assert metrics_of(scores, [2], ["mrr"])["mrr"] == pytest.approx(1 / 3)  # after items 0 and 1
    assert metrics_of(scores, [0], ["mrr"])["mrr"] == 1.0
    assert metrics_of(scores, [4], ["mrr"])["mrr"] == pytest.approx(1 / 4)
    # the sampled rank follows the same rule
    r = ranks_among(torch.tensor([1.0]), torch.tensor([2]), torch.tensor([[1.0, 1.0, 0.5, 2.0]]),
                    torch.tensor([[0, 4, 3, 1]]))
    assert r.item() == 3  # behind item 1 (higher score) and item 0 (tie, lower index)


def test_metric_names_are_checked():
    assert parse_metric("ndcg@10")[1] == 10
    for bad in ("ndcg", "mrr@5", "precision@10", "recall@0", "recall@x"):
        with pytest.raises(ValueError, match="metric"):
            parse_metric(bad)


def random_task(n_users: int = 120, n_items: int = 300, seed: int = 0, warm: bool = False):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        rows += [(u, "src", int(i)) for i in rng.choice(n_items, rng.integers(1, 30), replace=False)]
        rows += [(u, "tgt", int(i)) for i in rng.choice(n_items, rng.integers(1, 15), replace=False)]
    users = list(range(n_users // 2, n_users))
    return make_task(rows, {"src": n_items, "tgt": n_items}, valid=users[:10], test=users[10:], warm=warm)


def tied_scorer(n_items: int):
    """Deterministic per-user scores with many ties (rounded to 5 levels)."""
    def score(users: np.ndarray) -> torch.Tensor:
        rows = [torch.rand(n_items, generator=torch.Generator().manual_seed(int(u))) for u in users]
        return (torch.stack(rows) * 5).round()
    return score


def test_results_do_not_depend_on_chunk_size():
    task = random_task()
    scorer = tied_scorer(300)
    runs = [evaluate(scorer, task, task.test_users, chunk_size=c, sampled=True, n_negatives=99)
            for c in (1, 7, 1000)]
    assert set(runs[0].values) == {"recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr",
                                   "sampled_hit@1", "sampled_hit@5", "sampled_hit@10",
                                   "sampled_ndcg@5", "sampled_ndcg@10", "sampled_mrr"}
    for other in runs[1:]:
        for m, v in runs[0].values.items():
            np.testing.assert_array_equal(v, other.values[m], err_msg=m)


def test_evaluator_matches_a_per_user_reference():
    task = random_task(seed=1)
    scorer = tied_scorer(300)
    res = evaluate(scorer, task, task.test_users, ks=(10,), chunk_size=16)
    for row, (u, truth) in enumerate(zip(task.test_users, task.target_truth(task.test_users))):
        s = scorer(np.array([u]))[0].numpy()
        order = sorted(range(300), key=lambda i: (-s[i], i))  # ties by item index
        top = order[:10]
        hits = [1 / math.log2(r + 2) for r, i in enumerate(top) if i in set(truth)]
        ideal = sum(1 / math.log2(r + 2) for r in range(min(10, len(truth))))
        assert res.values["ndcg@10"][row] == pytest.approx(sum(hits) / ideal)
        assert res.values["recall@10"][row] == pytest.approx(len(hits) / len(truth))
        first = min(order.index(i) for i in truth) + 1
        assert res.values["mrr"][row] == pytest.approx(1 / first)


def test_warm_users_training_items_are_removed_from_the_ranking():
    # user 1 has target items 0 and 1 in train and 2 in holdout; a scorer ranking 0, 1, 2
    # first must give item 2 rank 1 once the training items are removed.
    rows = [(0, "src", 0), (0, "tgt", 0), (1, "src", 1), (1, "tgt", 0), (1, "tgt", 1)]
    task = make_task(rows, {"src": 5, "tgt": 5}, valid=[], test=[1], warm=True)
    task.holdout = task.train.iloc[:0].copy()
    task.holdout.loc[0] = [1, "tgt", 2, 9.0, 1.0]
    task._truth.clear()
    res = evaluate(lambda u: torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]]).expand(len(u), -1), task, [1])
    assert res.values["mrr"][0] == 1.0


def test_sampled_negatives_exclude_the_users_items_and_are_seeded():
    task = random_task(n_items=1200)
    users = task.test_users
    neg = sample_negatives(task, users, 999, seed=3)
    for row, (u, truth) in enumerate(zip(users, task.target_truth(users))):
        assert len(set(neg[row])) == 999
        assert not set(neg[row]) & set(truth.tolist())
    np.testing.assert_array_equal(neg, sample_negatives(task, users, 999, seed=3))
    assert (neg != sample_negatives(task, users, 999, seed=4)).any()
    # per-user seeding: a user's negatives do not depend on who else is evaluated
    np.testing.assert_array_equal(neg[5:6], sample_negatives(task, users[5:6], 999, seed=3))
    with pytest.raises(ValueError, match="fewer than 2000 negatives"):
        sample_negatives(task, users[:1], 2000)


def test_sampled_metrics_are_the_rank_of_the_last_target_item_among_the_negatives():
    task = random_task(n_items=1200)
    scorer = tied_scorer(1200)
    res = evaluate(scorer, task, task.test_users, sampled=True, n_negatives=999, seed=3)
    neg = sample_negatives(task, task.test_users, 999, seed=3)
    last = last_target_items(task, task.test_users)
    for row, u in enumerate(task.test_users):
        s = scorer(np.array([u]))[0].numpy()
        rank = 1 + sum((s[i], -i) > (s[last[row]], -last[row]) for i in neg[row])  # ties by index
        got = {m: res.values[m][row] for m in SAMPLED_METRICS}
        assert got["sampled_mrr"] == pytest.approx(1 / rank)
        for k in (1, 5, 10):
            assert got[f"sampled_hit@{k}"] == (rank <= k)
        assert got["sampled_ndcg@5"] == pytest.approx(1 / math.log2(rank + 1) if rank <= 5 else 0)
        assert got["sampled_ndcg@10"] == pytest.approx(1 / math.log2(rank + 1) if rank <= 10 else 0)


def test_bad_scorer_output_and_users_without_truth_are_clear_errors():
    task = random_task()
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(4, 300\)"):
        evaluate(lambda u: torch.zeros(len(u), 299), task, task.test_users, chunk_size=4)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(lambda u: torch.full((len(u), 300), float("nan")), task, task.test_users)
    with pytest.raises(ValueError, match="no hidden target items"):
        evaluate(tied_scorer(300), task, np.array([0, 1]))  # training users: nothing hidden
    with pytest.raises(ValueError, match="unique"):
        evaluate(tied_scorer(300), task, np.array([task.test_users[0]] * 2))


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_users():
    rng = np.random.default_rng(0)
    small, large = rng.exponential(size=100), rng.exponential(size=10_000)
    a, b = bootstrap(small), bootstrap(large)
    for i, v in ((a, small), (b, large)):
        assert i.low < i.mean < i.high and i.mean == pytest.approx(v.mean())
    assert (b.high - b.low) < (a.high - a.low) / 5  # ~ 1/sqrt(100): 10x narrower
    assert bootstrap(small) == a  # seeded
    # over seeds (several splits): two-level resampling, mean of the per-split means
    several = bootstrap([small, large, rng.exponential(size=500)])
    assert several.low < several.mean < several.high and several.n == 10_600


def test_paired_difference_sees_what_separate_intervals_miss():
    rng = np.random.default_rng(1)
    base = rng.exponential(size=1000)  # users differ a lot
    a, b = base + 0.02 + rng.normal(0, 0.01, 1000), base
    ia, ib = bootstrap(a), bootstrap(b)
    assert ia.low < ib.high  # the separate intervals overlap ...
    d = paired_difference(a, b)
    assert d.low > 0 and d.mean == pytest.approx(0.02, abs=0.002)  # ... the paired one does not
    same = paired_difference(b, b)
    assert same.low == same.high == 0
    with pytest.raises(ValueError, match="same users"):
        paired_difference(a, b[:10])


def test_buckets_by_history_length():
    lengths = np.array([1, 5, 6, 10, 11, 20, 21, 300])
    values = np.arange(8, dtype=float)
    got = by_bucket(values, lengths)
    assert list(got) == ["1-5", "6-10", "11-20", "21+"]
    assert [got[k].mean for k in got] == [0.5, 2.5, 4.5, 6.5]
    assert by_bucket(values[:2], lengths[:2])["21+"] is None


def test_json_round_trip_and_comparison_table(tmp_path):
    task = random_task()
    good = evaluate(lambda u: torch.zeros(len(u), 300).index_fill_(1, torch.arange(20), 1.0),
                    task, task.test_users)
    bad = evaluate(tied_scorer(300), task, task.test_users)
    good.to_json(tmp_path / "good.json")
    again = EvalResult.from_json(tmp_path / "good.json")
    np.testing.assert_array_equal(again.values["ndcg@10"], good.values["ndcg@10"])
    np.testing.assert_array_equal(again.history_len, good.history_len)
    table = compare({"good": good, "bad": bad}, reference="bad")
    header, _, row_good, row_bad = table.splitlines()
    assert "Δ ndcg@10 vs bad" in header and row_good.startswith("| good | ")
    assert row_bad.endswith("0.0000 [0.0000, 0.0000] |")
    other = evaluate(tied_scorer(300), task, task.test_users[:-1])
    with pytest.raises(ValueError, match="different users"):
        compare({"good": good, "other": other}, reference="good")
    (tmp_path / "broken.json").write_text('{"task": "x"}')
    with pytest.raises(ValueError, match="broken.json"):
        EvalResult.from_json(tmp_path / "broken.json")


def test_summary_over_several_splits():
    runs = [evaluate(tied_scorer(300), random_task(seed=s), random_task(seed=s).test_users) for s in (1, 2, 3)]
    got = summarize(runs)["ndcg@10"]
    assert got.mean == pytest.approx(np.mean([r.values["ndcg@10"].mean() for r in runs]))
    assert got.low < got.mean < got.high and got.n == sum(len(r.users) for r in runs)
