"""Top-K retrieval: FAISS flat equals exact torch; saved indexes reload; recall is measured."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fusion import ItemSpace, TargetConfig
from fusion.items import logits
from multimodal_interest.retrieval import (FAISS_KINDS, ExactRetriever, FaissRetriever, TargetItems,
                                           recall_at_k)
from serving_world import assert_same_ranking

N, D = 3000, 24


@pytest.fixture(scope="module")
def items() -> TargetItems:
    g = torch.Generator().manual_seed(0)
    vectors = F.normalize(torch.randn(N, D, generator=g), dim=1)
    vectors[7] = 0.0  # an item with nothing to embed
    return TargetItems(vectors, torch.randn(N, generator=g) * 0.5, 17.5)


@pytest.fixture(scope="module")
def queries() -> torch.Tensor:
    return F.normalize(torch.randn(40, D, generator=torch.Generator().manual_seed(1)), dim=1)


def reference(items: TargetItems, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's formula over the whole catalog, in float64."""
    s = items.scale * q.double() @ items.vectors.double().T + items.bias.double()
    return s.topk(k, dim=1)


def test_exact_top_k_is_the_model_score_whatever_the_chunk(items, queries):
    want = reference(items, queries, 20)
    for chunk in (N, 257):
        scores, idx = ExactRetriever(items, chunk=chunk).search(queries, 20)
        assert_same_ranking(scores, idx, want.values, want.indices)


def test_exact_scores_are_the_model_logits_bit_for_bit(items, queries):
    """Serving scores with the model's own formula: an :class:`ItemSpace` holding the same
    bias and temperature gives exactly the scores the exact retriever returns."""
    space = ItemSpace("p", TargetConfig(n_items=N, temperature=1 / items.scale))
    with torch.no_grad():
        space.bias.copy_(items.bias)
        space.log_scale.fill_(math.log(items.scale))
    with torch.inference_mode():
        items = TargetItems(items.vectors, items.bias, float(space.scale))
        want = space.logits(queries, items.vectors, None).topk(20, dim=1)
        assert torch.equal(logits(queries, items.vectors, items.scale, items.bias).topk(20, dim=1).values,
                           want.values)
    scores, idx = ExactRetriever(items).search(queries, 20)
    assert torch.equal(scores, want.values) and torch.equal(idx, want.indices)


def test_faiss_flat_agrees_with_exact_torch(items, queries):
    exact_s, exact_i = ExactRetriever(items).search(queries, 50)
    flat_s, flat_i = FaissRetriever.build("flat", items).search(queries, 50)
    assert_same_ranking(flat_s, flat_i, exact_s, exact_i)
    assert (flat_i == exact_i).float().mean() > 0.99  # ties are rare: nearly all ids are equal
    zero = torch.zeros(1, D)  # an empty interest: the bias alone ranks
    _, by_bias = FaissRetriever.build("flat", items).search(zero, 10)
    assert torch.equal(by_bias[0], items.bias.topk(10).indices)


@pytest.mark.parametrize("kind", FAISS_KINDS)
def test_saved_index_reloads_with_the_same_results(items, queries, kind, tmp_path):
    built = FaissRetriever.build(kind, items, nprobe=4)
    built.save(tmp_path / f"x.{kind}.faiss")
    loaded = FaissRetriever.load(tmp_path / f"x.{kind}.faiss", kind)
    loaded.set_search_params(nprobe=4, ef_search=128)
    assert loaded.n_items == N and loaded.params() == built.params()
    s1, i1 = built.search(queries, 10)
    s2, i2 = loaded.search(queries, 10)
    assert torch.equal(i1, i2) and torch.equal(s1, s2)


def test_excluded_items_never_come_back_and_k_is_capped(items, queries):
    exact = ExactRetriever(items)
    _, top = exact.search(queries[:2], 5)
    exclude = [top[0].numpy(), np.array([], dtype=np.int64)]
    for retriever in (exact, FaissRetriever.build("flat", items)):
        _, idx = retriever.search(queries[:2], 5, exclude)
        assert not set(idx[0].tolist()) & set(top[0].tolist())
        assert torch.equal(idx[1], top[1])
        _, everything = retriever.search(queries[:1], N + 100)
        assert sorted(everything[0].tolist()) == list(range(N))


def test_recall_is_measured_against_exact(items, queries):
    exact = ExactRetriever(items)
    ivf = FaissRetriever.build("ivf", items, nlist=32, nprobe=1)
    low = recall_at_k(ivf, exact, queries, 10)
    ivf.set_search_params(nprobe=32)  # every cell visited: exhaustive
    assert recall_at_k(ivf, exact, queries, 10) == 1.0
    assert low < 1.0  # one cell of 32 misses some of the true top-10 on these vectors
    hnsw = FaissRetriever.build("hnsw", items, ef_search=256)
    assert recall_at_k(hnsw, exact, queries, 10) >= 0.95


def test_bad_item_tables_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        TargetItems(torch.zeros(3, 4), torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match="finite"):
        TargetItems(torch.full((3, 4), float("nan")), torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="unknown FAISS index kind"):
        FaissRetriever.build("annoy", TargetItems(torch.zeros(3, 4), torch.zeros(3), 1.0))
