"""The closed-form model's tf-idf token block: its features, and what it lets the model rank.

The token block ``h T / sqrt(n)`` (``T`` the source items' tf-idf rows) carries most of the
linear model's gain on real catalogs; these tests pin its features on a hand-made catalog and
show that a tokens-only model transfers a lexical match that item ids cannot."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.training import TrainConfig
from multimodal_interest.training.closed_form import IDS, TOKENS, Featurizer, fit_closed_form
from multimodal_interest.training.closed_form.features import fit_tfidf
from multimodal_interest.training.features import ItemFeatures
from multimodal_interest.training.scoring import ModelScorer

SRC = ["red acrylic paint", "acrylic paint paint set", "blue stapler", "lonely word"]
TGT = ["red stapler", "paint brush", ""]
VOCAB = ["acrylic", "paint", "red", "stapler"]  # the tokens of at least two items, on either platform


def task_of(frame: pd.DataFrame, n_items: dict[str, int], valid: np.ndarray, test: np.ndarray) -> ColdStartTask:
    """``src -> tgt`` over ``frame`` (user_idx, platform, item_idx, timestamp), the valid and
    test users' target rows hidden."""
    frame = frame.assign(weight=1.0).sort_values(["user_idx", "timestamp"], ignore_index=True)
    hidden = frame["user_idx"].isin(np.concatenate([valid, test])) & (frame["platform"] == "tgt")
    return ColdStartTask("lexical", "s0", "src", "tgt", n_items, int(frame["user_idx"].max()) + 1,
                         frame[~hidden].reset_index(drop=True), frame[hidden].reset_index(drop=True), valid, test)


def by_hand(text: str) -> np.ndarray:
    """``[len(VOCAB)]`` the tf-idf row of ``text``: sublinear tf ``1 + ln tf``, smoothed idf
    ``ln((1 + n) / (1 + df)) + 1`` over the 7 texts of both platforms, unit length."""
    docs = [set(t.split()) for t in SRC + TGT]
    words = text.split()
    row = np.array([(1 + math.log(words.count(w))) * (math.log(8 / (1 + sum(w in d for d in docs))) + 1)
                    if w in words else 0.0 for w in VOCAB])
    norm = np.linalg.norm(row)
    return row / norm if norm else row


def test_tfidf_rows_are_sublinear_smoothed_unit_length_over_every_platforms_tokens():
    """A token of one item only (``set``, ``blue``, ``brush``) is left out; ``red`` and
    ``stapler`` count because the target platform's items have them too; a text with no kept
    token gets a zero row. The rows equal scikit-learn's ``TfidfVectorizer`` fitted on both
    platforms, and the formula by hand."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    got = fit_tfidf([SRC, TGT]).transform(SRC)
    assert got.shape == (len(SRC), len(VOCAB))
    vec = TfidfVectorizer(sublinear_tf=True, min_df=2).fit(SRC + TGT)
    assert sorted(vec.vocabulary_, key=vec.vocabulary_.get) == VOCAB
    np.testing.assert_allclose(got.toarray(), vec.transform(SRC).toarray(), atol=1e-12)
    np.testing.assert_allclose(got.toarray(), np.stack([by_hand(t) for t in SRC]), atol=1e-12)
    assert got[3].nnz == 0
    assert fit_tfidf([["only here"], ["and there"]]) is None  # no token of two items


def test_the_token_block_is_the_histories_root_n_pooled_tfidf():
    """``tokens = h T / sqrt(n)``: ``h`` the history's bag (counts) of kept items, ``n`` their
    count. An item neither fitted nor tokened (``lonely word``, in no fit history) is dropped
    from the history: it adds no tokens and does not dilute the others."""
    frame = pd.DataFrame({"user_idx": [0, 0, 1], "platform": ["src", "tgt", "src"], "item_idx": [0, 0, 1],
                          "timestamp": [0.0, 1.0, 0.0]})
    task = task_of(frame, {"src": len(SRC), "tgt": len(TGT)}, np.array([1]), np.zeros(0, np.int64))
    features = ItemFeatures(texts={"src": SRC, "tgt": TGT})
    fit_bags = sp.csr_matrix(np.array([[1.0, 0, 0, 0]]))
    feat = Featurizer(task, features, fit_bags)
    assert feat.kept.tolist() == [True, True, True, False]
    bags = sp.csr_matrix(np.array([[1.0, 2.0, 0, 0],    # paint twice
                                   [0, 0, 1.0, 1.0],    # the stapler, and an item dropped
                                   [0, 0, 0, 1.0]]))    # nothing kept: no tokens
    rows = feat.rows(np.array([5, 6, 7]), bags)
    t = np.stack([by_hand(s) for s in SRC])
    expected = np.stack([(t[0] + 2 * t[1]) / math.sqrt(3), t[2], np.zeros(len(VOCAB))])
    np.testing.assert_allclose(rows.blocks[TOKENS].toarray(), expected, atol=1e-12)
    np.testing.assert_allclose(rows.blocks[IDS].toarray()[0], [1 / math.sqrt(3), 2 / math.sqrt(3), 0, 0])


WORDS = ["acrylic", "stapler", "canvas", "ledger", "easel", "binder"]  # one topic each
PER_TOPIC = 4  # source items per topic; the last is never in a fit history (cold)
NOISE_TARGETS = 10


def lexical_world(users_per_topic: int = 20, seed: int = 0) -> tuple[ColdStartTask, ItemFeatures]:
    """Source item ``t * PER_TOPIC + j`` is named ``"<WORDS[t]> x<t><j>"`` (its own filler word
    once only); target item ``t`` is ``"the <WORDS[t]> one"``, then :data:`NOISE_TARGETS`
    others. A fit user of topic ``t`` has two of its warm source items and target item ``t``
    plus a noise item; a validation or test user of topic ``t`` has only its cold source item,
    which no fit user has: only the shared word links it to the topic."""
    rng = np.random.default_rng(seed)
    rows, user = [], 0
    for t in range(len(WORDS)):
        for _ in range(users_per_topic):
            for step, i in enumerate(rng.choice(PER_TOPIC - 1, 2, replace=False)):
                rows.append((user, "src", t * PER_TOPIC + int(i), float(step)))
            rows += [(user, "tgt", t, 2.0), (user, "tgt", len(WORDS) + int(rng.integers(NOISE_TARGETS)), 3.0)]
            user += 1
    held = {}
    for role in ("valid", "test"):
        held[role] = np.arange(user, user + len(WORDS))
        for t in range(len(WORDS)):
            rows += [(user, "src", t * PER_TOPIC + PER_TOPIC - 1, 0.0), (user, "tgt", t, 1.0)]
            user += 1
    src = [f"{w} x{t}{j}" for t, w in enumerate(WORDS) for j in range(PER_TOPIC)]
    tgt = [f"the {w} one" for w in WORDS] + [f"other n{k}" for k in range(NOISE_TARGETS)]
    frame = pd.DataFrame(rows, columns=["user_idx", "platform", "item_idx", "timestamp"])
    task = task_of(frame, {"src": len(src), "tgt": len(tgt)}, held["valid"], held["test"])
    return task, ItemFeatures(texts={"src": src, "tgt": tgt})


@pytest.mark.parametrize("users", ["valid", "test"])
def test_a_tokens_only_model_ranks_the_lexical_match_first_where_ids_cannot(users):
    """Each held-out user's only source item was never in a fit history; it shares its topic
    word with the fit users' items. The tokens-only model ranks the topic's target item first
    for every one of them; the ids-only model has nothing to go on (every user gets the same
    ranking, the prior: the six topic items, which
    fit users have most, tied)."""
    task, features = lexical_world()
    who = task.valid_users if users == "valid" else task.test_users
    tokens = fit_closed_form(task, features, TrainConfig(), lam=1.0, weights={"tokens": 1.0, "const": 1.0})
    top = ModelScorer(tokens.model, task)(who).argmax(1)
    assert top.tolist() == list(range(len(WORDS)))
    ids = fit_closed_form(task, features, TrainConfig(), lam=1.0, weights={"ids": 1.0, "const": 1.0})
    scores = ModelScorer(ids.model, task)(who)
    assert torch.allclose(scores, scores[:1].expand_as(scores), atol=1e-5)  # so one user at most is right
    assert tokens.valid_ndcg10 == pytest.approx(1.0) and ids.valid_ndcg10 < 0.6
