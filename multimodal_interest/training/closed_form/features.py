"""A history's features, block by block, computed as :class:`~fusion.linear.LinearFusion` pools it::

    ids     h / sqrt(n)                       h [N_s] the history's bag of kept items
    tokens  h T / sqrt(n)                     T [N_s, V] tf-idf of the items' texts
    cooc    h Q_s / sqrt(n)                   Q_s [N_s, k] the source's co-occurrence among all its users (:mod:`.cooc`)
    m       (mean_{j has m} x_m[j] - mu_m) W_m   each modality, whitened (W_m = (C_m + dI)^-1/2)
    const   1
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.training.features import ItemFeatures

from multimodal_interest.training.closed_form.blocks import CONST, COOC, IDS, TOKENS
from multimodal_interest.training.closed_form.cooc import cooc_basis

__all__ = ["CONST", "COOC", "IDS", "TOKENS", "Featurizer", "Rows", "fit_tfidf", "whitening"]


@dataclass
class Rows:
    """Features of some rows, block by block: ``blocks[b]`` ``[R, F_b]`` (sparse for ids and
    tokens, dense float64 otherwise), unscaled."""

    users: np.ndarray
    blocks: dict[str, sp.csr_matrix | np.ndarray] = field(default_factory=dict)


class Featurizer:
    """Computes :class:`Rows` of the source platform's histories. ``fit_bags [n, N_s]``: the fit
    histories; an item in one of them has its id part fitted."""

    def __init__(self, task: ColdStartTask, features: ItemFeatures, fit_bags: sp.csr_matrix):
        p = task.source
        n = task.n_items[p]
        self.vectors = {m: features.vectors[p][m].double().numpy() for m in features.vectors.get(p, {})}
        self.has = {m: features.present[p][m].numpy() if m in features.present.get(p, {})
                    else np.ones(n, bool) for m in self.vectors}
        self.vectorizer = fit_tfidf([features.texts[q] for q in task.platforms if q in features.texts])
        texts = features.texts.get(p)
        self.tokens = (sp.csr_matrix(self.vectorizer.transform(texts))  # [N_s, V]
                       if texts is not None and self.vectorizer is not None else None)
        self.cooc = cooc_basis(task, p)  # [N_s, k] or None
        seen = np.asarray(fit_bags.sum(0)).ravel() > 0
        tokened = np.diff(self.tokens.indptr) > 0 if self.tokens is not None else np.zeros(n, bool)
        self.table_present = seen | tokened  # [N_s] items with a table row (ids, tokens or co-occurrence)
        if self.cooc is not None:
            self.table_present |= np.abs(self.cooc).sum(1) > 0
        self.kept = self.table_present.copy()  # [N_s] items a history keeps: a table row or a modality
        for has in self.has.values():
            self.kept |= has
        self.whiten: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # m -> (mu [d], W [d, d])

    def rows(self, users: np.ndarray, bags: sp.csr_matrix) -> Rows:
        """``bags [R, N_s]``: counts of each history's items (unkept ones are dropped here).
        The whitening of each modality is fitted on the first rows given (the fit's)."""
        bags = sp.csr_matrix(bags.multiply(self.kept[None, :]).astype(np.float64))
        n = np.asarray(bags.sum(1)).ravel()
        table = sp.csr_matrix(bags.multiply(self.table_present[None, :]))
        rooted = sp.csr_matrix(sp.diags(1.0 / np.sqrt(np.maximum(n, 1))) @ table)  # [R, N_s]
        out = Rows(users, {IDS: rooted})
        if self.tokens is not None:
            out.blocks[TOKENS] = sp.csr_matrix(rooted @ self.tokens)  # [R, V]
        if self.cooc is not None:
            out.blocks[COOC] = np.asarray(rooted @ self.cooc)  # [R, k]
        for m, x in self.vectors.items():
            with_m = sp.csr_matrix(bags.multiply(self.has[m][None, :]))
            count = np.asarray(with_m.sum(1)).ravel()  # [R]
            mean = (with_m @ x) / np.maximum(count, 1)[:, None]  # [R, d_m]
            if m not in self.whiten:
                self.whiten[m] = whitening(mean[count > 0])
            mu, w = self.whiten[m]
            out.blocks[m] = np.where(count[:, None] > 0, (mean - mu) @ w, 0.0)
        out.blocks[CONST] = np.ones((len(users), 1))
        return out


def fit_tfidf(all_texts: list[list[str]]):
    """A tf-idf vectorizer (sublinear tf, unit-length rows) whose vocabulary (tokens of at
    least two items) and idf are learned from every platform's texts; None when there are no
    texts or no such token."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float64)
    try:
        return vec.fit([t for ts in all_texts for t in ts])
    except ValueError:  # empty vocabulary
        return None


def whitening(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mu [d], W [d, d])`` with ``W = (C + delta I)^-1/2`` of the rows' covariance ``C``."""
    d = means.shape[1]
    if len(means) < 2:
        return np.zeros(d), np.eye(d)
    mu = means.mean(0)
    c = np.cov(means - mu, rowvar=False)
    evals, evecs = np.linalg.eigh(c + 1e-3 * max(np.trace(c) / d, 1e-12) * np.eye(d))
    return mu, (evecs / np.sqrt(evals)) @ evecs.T
