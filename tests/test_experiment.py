"""One benchmark run: methods on the same task, and the report a reader gets."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _tasks import planted_task
from synthetic import synthetic_task

from multimodal_interest.baselines import tune
from multimodal_interest.blend import BLEND, WEIGHTS, Blend, standardize
from multimodal_interest.evaluate import evaluate
from multimodal_interest.baselines import BASELINES, DEFAULT_BUDGET
from multimodal_interest.experiment import MODEL, run_methods, write_report
from multimodal_interest.training import ItemFeatures, ModelScorer, TrainConfig


def test_report_compares_every_method_with_the_best_baseline(tmp_path):
    task, vectors = planted_task(n_clusters=110)  # 1,100 items: room for 999 sampled negatives
    features = ItemFeatures(vectors={p: {"text": v} for p, v in vectors.items()},
                            present={p: {"text": torch.ones(len(v), dtype=torch.bool)} for p, v in vectors.items()},
                            fingerprints={"text": "test"})
    runs = run_methods(task, ["popularity", "item-knn", "content-knn"], features, tmp_path, sampled=True,
                       progress=False)
    ndcg = {n: r.result.values["ndcg@10"].mean() for n, r in runs.items()}
    best = max(ndcg, key=ndcg.get)
    assert best != "popularity"  # the planted signal is there for the others to find
    report = write_report(task, runs, tmp_path / "report", command="mmi evaluate planted --source src")
    doc = json.loads((tmp_path / "report" / "src-tgt.json").read_text())
    assert doc["best_baseline"] == best and doc["command"] == "mmi evaluate planted --source src"
    assert set(doc["methods"]) == set(runs)
    assert set(doc["methods"]["popularity"]["summary"]) >= {"ndcg@10", "recall@50", "mrr", "sampled_hit@10"}
    text = report.path.read_text()
    assert text == report.markdown() and text.startswith(report.summary() + "\nNDCG@10 by source")
    assert [r[0] for r in report.results.rows] == list(runs) and report.results.header[-1] == f"Δ ndcg@10 vs {best} [95%]"
    assert f"Δ ndcg@10 vs {best} [95%]" in text and "`mmi evaluate planted --source src`" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {best} |"))
    assert row.endswith("| 0.0000 [0.0000, 0.0000] |")  # the best baseline against itself
    assert row.count("[") == 1 + 5 + 6  # an interval for every metric, full and sampled, and the Δ
    for figure in ("src-tgt-ndcg10.png", "src-tgt-by-history.png"):
        assert (tmp_path / "report" / figure).stat().st_size > 1000
    # the tuning budget, each baseline's number of settings, what judged them and the one kept
    assert f"at most {DEFAULT_BUDGET} settings" in text and report.tuning.markdown() in text
    assert report.trials.markdown() in text
    for name in runs:
        trials = doc["methods"][name]["notes"]["trials"]
        row = next(r for r in report.tuning.rows if r[0] == name)
        assert row[1] == str(len(trials)) == str(len(BASELINES[name].grid)) and len(trials) <= DEFAULT_BUDGET
        assert row[2] == f"NDCG@10 of the {len(task.valid_users)} validation users" == doc["tuning"][name]["judged_by"]
        assert float(row[4]) == round(max(t["valid_ndcg10"] for t in trials), 4)
        assert [r[2] for r in report.trials.rows if r[0] == name] == [
            ", ".join(f"{k}={v}" for k, v in s.items()) or "defaults" for s in BASELINES[name].grid]


def test_the_blend_reads_ranks_not_scales():
    """z(model) + w * z(knn): multiplying or shifting either scorer's scores changes nothing."""
    users = np.arange(6)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 40, generator=gen), torch.rand(6, 40, generator=gen).double()
    blend = Blend(lambda u: a[u], lambda u: b[u], 0.5)(users)
    rescaled = Blend(lambda u: 7.0 * a[u] - 3.0, lambda u: 1e4 * b[u] + 2.0, 0.5)(users)
    assert blend.dtype == torch.float32 and torch.allclose(blend, rescaled, atol=1e-5)
    z = standardize(a)
    assert torch.allclose(z.mean(1), torch.zeros(6), atol=1e-6) and torch.allclose(z.std(1), torch.ones(6))
    assert not torch.allclose(blend, Blend(lambda u: a[u], lambda u: b[u], 2.0)(users))  # the weight counts


def test_the_blend_runs_after_its_parts_is_tuned_on_valid_and_is_no_baseline(tmp_path):
    task, features = synthetic_task()
    config = TrainConfig(kind="transformer", dim=32, n_heads=2, n_layers=1, batch_size=64, lr=5e-3, dropout=0.0,
                         min_epoch_steps=1, epochs=2)
    with pytest.raises(ValueError, match="blends interest-model and item-knn: run them too"):
        run_methods(task, [BLEND, "item-knn"], features, tmp_path, config, progress=False)
    runs = run_methods(task, [BLEND, "item-knn", MODEL, "popularity"], features, tmp_path, config,
                       progress=False)
    trials = runs[BLEND].notes["trials"]
    assert [t["weight"] for t in trials] == list(WEIGHTS)
    report = write_report(task, runs, tmp_path / "report")
    doc = json.loads(report.json_path.read_text())
    assert doc["best_baseline"] in ("item-knn", "popularity") and BLEND in doc["methods"]
    best = max(trials, key=lambda t: t["valid_ndcg10"])["weight"]
    want = evaluate(Blend(ModelScorer(runs[MODEL].model, task), tune("item-knn", task, None).model.score, best),
                    task, task.test_users)
    np.testing.assert_allclose(runs[BLEND].result.values["ndcg@10"], want.values["ndcg@10"], atol=1e-6)


def test_the_baselines_and_the_model_read_the_same_item_text(tmp_path):
    """One text rule: the lexical baselines' item texts are the ones the interest model's fit
    reads (the catalog's rule: a cell that is not text gives no text, a huge text is cut)."""
    import pandas as pd
    from data_fixtures import write_tiny

    from multimodal_interest.catalog import MAX_TEXT_CHARS
    from multimodal_interest.data.dataset import CrossPlatformDataset
    from multimodal_interest.experiment import item_texts

    root = write_tiny(tmp_path / "ds")
    items = pd.read_csv(root / "items/art.csv", keep_default_na=False)
    items.loc[0, "title"] = "paint " * (MAX_TEXT_CHARS // 4)  # longer than an encoder ever reads
    items.to_csv(root / "items/art.csv", index=False)
    dataset = CrossPlatformDataset.load(root)
    baselines = item_texts(dataset, ["art", "office"])
    model = ItemFeatures.for_dataset(None, dataset, ["art", "office"]).texts
    assert baselines == model and set(model) == {"art", "office"}
    assert len(baselines["art"][0]) == MAX_TEXT_CHARS and baselines["office"] == ["stapler", "pen, blue"]
