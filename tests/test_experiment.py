"""One benchmark run: methods on the same task, and the report a reader gets."""
from __future__ import annotations

import json

import torch
from _tasks import planted_task

from multimodal_interest.experiment import run_methods, write_report
from multimodal_interest.training import ItemFeatures


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
    md = write_report(task, runs, tmp_path / "report", command="mmi evaluate planted --source src")
    doc = json.loads((tmp_path / "report" / "src-tgt.json").read_text())
    assert doc["best_baseline"] == best and doc["command"] == "mmi evaluate planted --source src"
    assert set(doc["methods"]) == set(runs)
    assert set(doc["methods"]["popularity"]["summary"]) >= {"ndcg@10", "recall@50", "mrr", "sampled_hit@10"}
    text = md.read_text()
    assert f"Δ ndcg@10 vs {best} [95%]" in text and "`mmi evaluate planted --source src`" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {best} |"))
    assert row.endswith("| 0.0000 [0.0000, 0.0000] |")  # the best baseline against itself
    assert row.count("[") == 1 + 5 + 6  # an interval for every metric, full and sampled, and the Δ
    for figure in ("src-tgt-ndcg10.png", "src-tgt-by-history.png"):
        assert (tmp_path / "report" / figure).stat().st_size > 1000
