"""Lexical content kNN: BM25 (or tf-idf) weighted words of each item's text.

Each item's text (the one the interest model reads: :func:`multimodal_interest.features.item_texts`,
the catalog's text rule) is cut into lowercase words by scikit-learn's ``CountVectorizer`` (English stop words
dropped), one vocabulary over both platforms' catalogs. A word ``t`` of item ``d`` weighs

- ``bm25``: ``idf(t) * tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl))``, with
  ``idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))`` (Robertson & Zaragoza 2009; the
  Lucene form, never negative), ``N`` items, ``df`` items with the word;
- ``tfidf``: scikit-learn's ``TfidfTransformer`` (sublinear tf, smoothed idf).

Item rows are L2-normalised; a cold user's profile is the normalised sum of their source
items' rows, and the score of target item ``j`` is ``cos(profile, row_j) + pop_weight *
popularity_j / max popularity`` (zero-shot: only the prior learns from interactions).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from multimodal_interest.baselines.base import MAX_GRID, Baseline, register_baseline
from multimodal_interest.baselines.itemknn import TIE_BREAK, user_item_matrix
from multimodal_interest.baselines.popularity import target_popularity
from multimodal_interest.baselines.space import Choice, LogUniform, Uniform

WEIGHTINGS = ("bm25", "tfidf")


@dataclass
class BM25KNNConfig:
    weighting: str = "bm25"  # one of WEIGHTINGS
    k1: float = 1.2  # BM25 term-frequency saturation
    b: float = 0.75  # BM25 length normalisation, 0 (none) .. 1 (full)
    pop_weight: float = 0.0  # weight of normalised target popularity added to the cosine
    min_df: int = 1  # drop words in fewer items than this

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"bm25-knn: weighting must be one of {WEIGHTINGS}; got {self.weighting!r}")
        for option, value, low, high in (("k1", self.k1, 0.0, None), ("b", self.b, 0.0, 1.0),
                                         ("pop_weight", self.pop_weight, 0.0, None)):
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= low
                    and (high is None or value <= high)):
                where = f">= {low}" if high is None else f"in [{low}, {high}]"
                raise ValueError(f"bm25-knn: {option} must be {where}; got {value!r}")
        if not (isinstance(self.min_df, int) and self.min_df >= 1):
            raise ValueError(f"bm25-knn: min_df must be an integer >= 1; got {self.min_df!r}")


# tried on the validation users in this order, as many as the tuning budget allows (on
# Art/Office the words alone are weak across platforms: the prior matters, around 1)
_CANDIDATES = [
    {"weighting": "bm25", "pop_weight": 1.0},
    {"weighting": "bm25", "pop_weight": 0.3},
    {"weighting": "tfidf", "pop_weight": 1.0},
    {"weighting": "bm25", "pop_weight": 3.0},
    {"weighting": "bm25", "pop_weight": 0.0},
    {"weighting": "bm25", "b": 0.3, "pop_weight": 1.0},
]


def bm25_weights(counts: sp.csr_matrix, k1: float, b: float) -> sp.csr_matrix:
    """``[n_docs, n_words]`` BM25 weights of ``counts`` (term frequencies, same shape)."""
    counts = sp.csr_matrix(counts, dtype=np.float64)
    n = counts.shape[0]
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    length = np.asarray(counts.sum(1)).ravel()
    avg = length.mean() if n and length.mean() > 0 else 1.0
    row = np.repeat(np.arange(n), np.diff(counts.indptr))
    tf = counts.data
    data = idf[counts.indices] * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length[row] / avg))
    return sp.csr_matrix((data, counts.indices, counts.indptr), shape=counts.shape)


def text_vectors(texts: Sequence[str], config: BM25KNNConfig) -> sp.csr_matrix:
    """``[len(texts), n_words]`` L2-normalised weighted word vectors (a text without any
    kept word gets a zero row)."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
    from sklearn.preprocessing import normalize

    words = CountVectorizer(lowercase=True, strip_accents="unicode", stop_words="english",
                            min_df=config.min_df)
    try:
        counts = words.fit_transform(texts)
    except ValueError as e:  # an empty vocabulary: nothing but stop words, or min_df too high
        raise ValueError(f"bm25-knn: no words left in the item texts ({e})") from None
    if config.weighting == "bm25":
        weighted = bm25_weights(counts, config.k1, config.b)
    else:
        weighted = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
    return normalize(weighted.astype(np.float64), norm="l2", axis=1).tocsr()


@register_baseline
class BM25KNN(Baseline):
    """Cosine between a user's summed source word vectors and each target item's.

    Tuned over the first :data:`MAX_GRID` of ``_CANDIDATES``: BM25 (k1 1.2, b 0.75) with
    popularity weight 1, 0.3 and 3, and tf-idf with weight 1. Beyond the grid (a larger
    budget): weighting bm25 or tfidf, k1 uniform in [0.5, 2], b uniform in [0, 1] (both
    unused by tfidf), popularity weight 0 or log-uniform in [0.1, 10].
    """

    name = "bm25-knn"
    Config = BM25KNNConfig
    needs_text = True
    grid = _CANDIDATES[:MAX_GRID]
    space = {"weighting": Choice(WEIGHTINGS), "k1": Uniform(0.5, 2.0), "b": Uniform(0.0, 1.0),
             "pop_weight": Choice((0.0, LogUniform(0.1, 10.0)))}

    def _fit(self, task, item_features):
        texts = [self.item_texts[p] for p in task.platforms]
        rows = text_vectors([t for part in texts for t in part], self.config)
        n_src = task.n_items[task.source]
        self.src = rows[:n_src]  # within-platform: one catalog, source = target
        self.tgt = rows[-task.n_items[task.target]:].T.tocsc()  # [n_words, n_target]
        pop = target_popularity(task).double()
        self.prior = (self.config.pop_weight + TIE_BREAK) * pop / pop.max().clamp(min=1)
        self.item_texts = None  # the vectors are all it needs

    def _score(self, users):
        from sklearn.preprocessing import normalize

        uniq = np.unique(users)
        x = user_item_matrix(self.task, self.task.source, uniq)[np.searchsorted(uniq, users)]
        profile = normalize(x @ self.src, norm="l2", axis=1)  # [B, n_words]
        return torch.from_numpy((profile @ self.tgt).toarray()) + self.prior
