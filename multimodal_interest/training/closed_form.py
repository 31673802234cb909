"""The linear interest model, fitted in closed form: kernel ridge regression from what a
user's source history holds to their target items, every setting chosen on the run's
validation users.

A fit user ``r`` brings a history (kept items only: :mod:`fusion.linear`) and target items
``y_r`` (0/1 ``[N_t]``). Fit users are the training users with items on both platforms
(:meth:`~multimodal_interest.data.task.ColdStartTask.overlap_users`); for a within-platform
task, each training user gives 5 rows: their items less a random fifth as the history, all
of their items as the targets (:func:`fit_rows`). Their features, in blocks::

    ids     h_r / sqrt(n_r)                   h_r [N_s] the history's bag of kept items
    tokens  h_r T / sqrt(n_r)                 T [N_s, V] tf-idf of the items' texts
    m       (mean_{j has m} x_m[j] - mu_m) W_m   each modality, whitened (W_m = (C_m + dI)^-1/2)
    const   1

Each block is scaled to mean squared norm 1 over the fit users (``s_b``) and weighted
(``w_b``); the kernel is ``K = sum_b w_b s_b^2 Z_b Z_b^T`` and a user with features ``z``
scores the target items ``k(z) (K + lam I)^-1 Y``. Each setting is scored by NDCG@10 on the
run's validation users and, from the same factorization, on every fit user left out of the
fit (all of a user's rows at once: the leave-group-out identity of ridge, :class:`Validator`),
so the search sees thousands of held-out users, not a few hundred. That score picks ``lam``
(grid :data:`LAMBDAS`, weights 1), then each block's weight (0, x1/4 or x4: a block that only
adds noise is switched off; the constant, whose coefficients are the prior an empty history
gets, is kept), then ``lam`` once more (/3, x3); a step is taken only when it beats the best
so far by half a standard error of the per-user difference (:meth:`Trial.beats`).

The chosen fit becomes an :class:`~fusion.InterestModel` by reduced-rank regression: ``V``
``[N_t, r]`` the top right singular vectors of the fitted scores ``K (K + lam I)^-1 Y``,
``alpha = (K + lam I)^-1 Y V``, and each block's coefficients ``A_b = w_b s_b^2 Z_b^T alpha``
are baked into the linear fusion: the source platform's item table (ids and tokens, both
root-n pooled), each modality's projection ``(x - mu_m) W_m A_m`` and the constant; the
target's learned item vectors are ``V``. Then ``u . V = k(z) (K + lam I)^-1 Y V V^T``: the
kernel ridge scores, exactly when ``r = N_t``, projected on the top ``r`` directions
otherwise (``r = min(dim, N_t, fit users)``; ``dim`` None, the default: 1024, and the
model's width is then ``r``).
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from fusion import InterestConfig, InterestModel
from fusion.config import DEFAULT_DIMS
from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.run import Run
from multimodal_interest.training.config import TrainConfig
from multimodal_interest.training.features import ItemFeatures
from multimodal_interest.training.record import task_identity

log = logging.getLogger(__name__)

LAMBDAS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)  # ridge strength, on a kernel of mean diagonal sum(w)
RANK_LAMBDAS = (1.0, 3.0, 10.0)  # the saved rank-r model's lam: the best full-rank one times these
WEIGHT_STEPS = (0.0, 0.25, 4.0)  # each block's weight tried at these multiples of its current one (off first)
MIN_GAIN = 1e-4  # validation NDCG@10 a change must add to be taken (and STEP_SE standard errors)
STEP_SE = 0.5  # Trial.beats: the standard errors of the per-user difference a step must gain (1 lost real gains)
MAX_FIT_USERS = 12_000  # more fit users (seeded sample): K is [n, n]
WITHIN_FOLDS = 5  # within-platform tasks: each fit user's items in this many folds, each left out of one row
IDS, TOKENS, CONST = "ids", "tokens", "const"


@dataclass
class Trial:
    """One setting tried: NDCG@10 of each validation user and, for the search's settings, of
    each fit user left out of the fit."""

    lam: float
    weights: dict[str, float]
    users: np.ndarray  # [V] each validation user's NDCG@10
    rank: int | None = None  # of the reduced-rank model scored; None: the full kernel ridge
    left_out: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [U] each fit user's, left out

    @property
    def valid_ndcg10(self) -> float:
        return float(self.users.mean())

    @property
    def held_out(self) -> np.ndarray:
        """``[V + U]`` every held-out user's NDCG@10: what the search compares."""
        return np.concatenate([self.users, self.left_out])

    def beats(self, other: Trial) -> bool:
        """Better than ``other`` by more than :data:`MIN_GAIN` and :data:`STEP_SE` standard
        errors of the paired per-user difference: a change that held-out users cannot tell from
        noise is not taken (greedy steps otherwise fit their noise)."""
        d = self.held_out - other.held_out
        return float(d.mean()) > max(MIN_GAIN, STEP_SE * float(d.std(ddof=1)) / np.sqrt(len(d)))

    def row(self) -> dict:
        row = {"lam": self.lam, **{f"w_{b}": w for b, w in self.weights.items()}, "rank": self.rank,
               "valid_ndcg10": round(self.valid_ndcg10, 6)}
        if len(self.left_out):
            row["left_out_ndcg10"] = round(float(self.left_out.mean()), 6)
        return row


@dataclass
class Rows:
    """Features of some users, block by block: ``blocks[b]`` ``[R, F_b]`` (sparse for ids
    and tokens, dense float64 otherwise), unscaled."""

    users: np.ndarray
    blocks: dict[str, sp.csr_matrix | np.ndarray] = field(default_factory=dict)


@dataclass
class FitResult:
    model: InterestModel
    trials: list[Trial]
    best: Trial
    valid_ndcg10: float  # the saved model's (rank r), as the evaluator scores it
    seconds: float


class Featurizer:
    """Computes :class:`Rows` the way :class:`~fusion.linear.LinearFusion` pools a history."""

    def __init__(self, task: ColdStartTask, features: ItemFeatures, fit_bags: sp.csr_matrix):
        p = task.source
        n = task.n_items[p]
        self.vectors = {m: features.vectors[p][m].double().numpy() for m in features.vectors.get(p, {})}
        self.has = {m: features.present[p][m].numpy() if m in features.present.get(p, {})
                    else np.ones(n, bool) for m in self.vectors}
        texts = features.texts.get(p)
        self.tokens = _tfidf([features.texts[q] for q in task.platforms if q in features.texts],
                             texts) if texts is not None else None
        seen = np.asarray(fit_bags.sum(0)).ravel() > 0  # in a fit history: the id part is fitted
        tokened = np.diff(self.tokens.indptr) > 0 if self.tokens is not None else np.zeros(n, bool)
        self.table_present = seen | tokened  # items with a table row (ids or tokens)
        self.kept = self.table_present.copy()  # items a history keeps: a table row or a modality
        for has in self.has.values():
            self.kept |= has
        self.whiten: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # m -> (mu [d], W [d, d])

    def rows(self, users: np.ndarray, bags: sp.csr_matrix) -> Rows:
        """``bags [R, N_s]``: counts of each history's items (unkept ones are dropped here)."""
        bags = sp.csr_matrix(bags.multiply(self.kept[None, :]).astype(np.float64))
        n = np.asarray(bags.sum(1)).ravel()
        table = sp.csr_matrix(bags.multiply(self.table_present[None, :]))
        rooted = sp.diags(1.0 / np.sqrt(np.maximum(n, 1))) @ table
        out = Rows(users, {IDS: sp.csr_matrix(rooted)})
        if self.tokens is not None:
            out.blocks[TOKENS] = sp.csr_matrix(rooted @ self.tokens)
        for m, x in self.vectors.items():
            with_m = sp.csr_matrix(bags.multiply(self.has[m][None, :]))
            count = np.asarray(with_m.sum(1)).ravel()
            mean = (with_m @ x) / np.maximum(count, 1)[:, None]
            if m not in self.whiten:  # fitted on the first rows given: the fit users'
                self.whiten[m] = _whitening(mean[count > 0])
            mu, w = self.whiten[m]
            out.blocks[m] = np.where(count[:, None] > 0, (mean - mu) @ w, 0.0)
        out.blocks[CONST] = np.ones((len(users), 1))
        return out


def _tfidf(all_texts: list[list[str]], texts: list[str]) -> sp.csr_matrix | None:
    """``[N_s, V]`` tf-idf rows (sublinear tf, unit length) of ``texts``, the vocabulary
    (tokens of at least two items) and idf learned from every platform's texts; None when
    the texts have no such token."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float64)
    try:
        vec.fit([t for ts in all_texts for t in ts])
    except ValueError:  # empty vocabulary
        return None
    return sp.csr_matrix(vec.transform(texts))


def _whitening(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mu [d], W [d, d])`` with ``W = (C + delta I)^-1/2`` of the rows' covariance ``C``."""
    d = means.shape[1]
    if len(means) < 2:
        return np.zeros(d), np.eye(d)
    mu = means.mean(0)
    c = np.cov(means - mu, rowvar=False)
    evals, evecs = np.linalg.eigh(c + 1e-3 * max(np.trace(c) / d, 1e-12) * np.eye(d))
    return mu, (evecs / np.sqrt(evals)) @ evecs.T


def _bags(items: torch.Tensor, mask: torch.Tensor, n_items: int) -> sp.csr_matrix:
    """``[U, N]`` counts of each history's items."""
    rows = np.repeat(np.arange(items.shape[0]), mask.sum(1).numpy())
    cols = items[mask].numpy()
    return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(items.shape[0], n_items))


def _targets(users: np.ndarray, frame, n_items: int) -> sp.csr_matrix:
    """``[U, N_t]`` 0/1: each user's items in ``frame`` (columns user_idx, item_idx)."""
    row = {int(u): i for i, u in enumerate(users)}
    r = frame["user_idx"].map(row).to_numpy()
    y = sp.csr_matrix((np.ones(len(r)), (r, frame["item_idx"].to_numpy())), shape=(len(users), n_items))
    y.data[:] = 1.0
    return y


def fit_rows(task: ColdStartTask, max_len: int, seed: int) -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]:
    """``(users [n], history bags [n, N_s], targets [n, N_t])`` of the fit rows (at most
    :data:`MAX_FIT_USERS`, a seeded sample of users), histories cut to their most recent
    ``max_len``. Within a platform, a user gives :data:`WITHIN_FOLDS` rows (their ``users``
    entry repeats): their items in random folds, each row's history all but one fold, its
    targets all of their items. A target that is in the history is there to be recalled, not
    to be scored 0 (a history's own items are excluded when ranking): labelled 0, each item
    would teach "not this item" to its own users' rows, against their co-occurrence.
    Reconstructing the whole set from a part is a denoising autoencoder's objective."""
    rng = np.random.default_rng(seed)
    users = task.overlap_users()
    folds = 1 if task.source != task.target else WITHIN_FOLDS
    if len(users) * folds > MAX_FIT_USERS:
        users = np.sort(rng.choice(users, MAX_FIT_USERS // folds, replace=False))
    if folds == 1:
        h = task.source_histories(users, max_len)
        frame = task.train[(task.train["platform"] == task.target) & task.train["user_idx"].isin(users)]
        return users, _bags(h.items, h.mask, task.n_items[task.source]), _targets(users, frame, task.n_items[task.target])
    h = task.source_histories(users, None)  # within: drop a fold of each user's items, then cut the history
    fold = torch.from_numpy(rng.integers(0, folds, tuple(h.items.shape)))
    n = task.n_items[task.target]
    histories, useful = [], []
    for f in range(folds):
        history = h.mask & (fold != f)
        histories.append(_bags(h.items, history & (history.flip(1).cumsum(1).flip(1) <= max_len), n))
        useful.append((history.sum(1) > 0) & (history.sum(1) < h.mask.sum(1)))  # a history, something left out
    keep = np.flatnonzero(torch.cat(useful).numpy())
    targets = sp.vstack([_bags(h.items, h.mask, n).sign()] * folds)
    return np.tile(users, folds)[keep], sp.csr_matrix(sp.vstack(histories))[keep], sp.csr_matrix(targets)[keep]


def block_kernels(fit: Rows, other: Rows) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Per block: ``K_b [n, n]`` (fit x fit), ``K_b [R, n]`` (other x fit), both scaled by
    ``s_b^2``, and ``s_b^2``. A block that is zero on every fit user is left out."""
    kff, kof, scale = {}, {}, {}
    for b, z in fit.blocks.items():
        zo = other.blocks[b]
        if sp.issparse(z):
            sq = float(z.multiply(z).sum()) / z.shape[0]
            a, c = _gram(z, z), _gram(zo, z)
        else:
            sq = float((z * z).sum()) / z.shape[0]
            a, c = z @ z.T, zo @ z.T
        if sq <= 0:
            continue
        scale[b] = 1.0 / sq
        kff[b], kof[b] = (a / sq).astype(np.float32), (c / sq).astype(np.float32)
    return kff, kof, scale


def _gram(a: sp.csr_matrix, b: sp.csr_matrix, chunk: int = 2048) -> np.ndarray:
    """``a @ b.T`` as a dense float64 array, ``b``'s rows a chunk at a time."""
    bt = sp.csc_matrix(b.T)
    return np.concatenate([(a @ bt[:, i:i + chunk]).toarray() for i in range(0, bt.shape[1], chunk)], 1) \
        if b.shape[0] else np.zeros((a.shape[0], 0))


class Validator:
    """Scores ``(lam, weights)`` from one inverse ``G = (K + lam I)^-1`` ``[n, n]``: NDCG@10 of
    the validation users, and of each fit user with all of their rows left out of the fit. For
    ridge, the scores of rows ``I`` fitted without them are ``Y_I - (G_II)^-1 (G Y)_I``, so
    leaving each user out costs one ``[s, s]`` solve, not a refit. Within a platform a fit
    row's items to recall are those its history left out (its history's items are not
    ranked, as for a validation user); across platforms, all of its target items."""

    def __init__(self, task: ColdStartTask, kff: dict, kvf: dict, y: sp.csr_matrix, valid_users: np.ndarray,
                 fit_users: np.ndarray, fit_bags: sp.csr_matrix):
        self.task, self.kff, self.kvf, self.y, self.users = task, kff, kvf, y, valid_users
        self.yt = sp.csr_matrix(y.T.astype(np.float32))
        within = task.source == task.target
        self.seen = sp.csr_matrix(fit_bags.sign()) if within else None
        held = sp.csr_matrix(y - y.multiply(self.seen) if within else y)
        held.eliminate_zeros()
        self.held = held
        has = np.diff(held.indptr) > 0
        _, group, counts = np.unique(fit_users, return_inverse=True, return_counts=True)
        order = np.argsort(group, kind="stable")
        idx = np.full((len(counts), counts.max()), -1)  # [U, s] each fit user's rows, -1 padded
        idx[group[order], np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)] = order
        scored = np.zeros(len(counts), bool)  # users with something to recall in some row
        np.logical_or.at(scored, group, has)
        self.groups = idx[scored]

    def __call__(self, lam: float, weights: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """``(validation users' NDCG@10 [V], fit users' left-out NDCG@10 [U])``."""
        k = _combine(self.kff, weights)
        k[np.diag_indices_from(k)] += lam
        g = torch.cholesky_inverse(torch.linalg.cholesky(torch.from_numpy(k)))
        x = (g @ torch.from_numpy(np.ascontiguousarray(_combine(self.kvf, weights).T))).numpy()  # [n, V]
        return self.ndcg(np.ascontiguousarray((self.yt @ x).T)), self.left_out(g)  # [V, N_t] scores

    def left_out(self, g: torch.Tensor) -> np.ndarray:
        """``[U]`` each fit user's NDCG@10 (mean over their rows with items to recall) from
        ``G`` ``[n, n]``, with the user's rows left out of the fit."""
        n_t, s = self.y.shape[1], self.groups.shape[1]
        chunk = max(1, (1 << 23) // (s * n_t))
        out = []
        for lo in range(0, len(self.groups), chunk):
            idx = self.groups[lo:lo + chunk]
            rows = np.maximum(idx, 0).reshape(-1)
            seen = self.seen[rows] if self.seen is not None else None
            ndcg = _ndcg10(self.left_out_scores(g, idx).reshape(len(rows), n_t), self.held[rows], seen)
            ndcg = ndcg.reshape(idx.shape)
            ndcg[idx < 0] = np.nan
            out.append(np.nanmean(ndcg, 1))
        return np.concatenate(out) if out else np.zeros(0)

    def left_out_scores(self, g: torch.Tensor, groups: np.ndarray) -> torch.Tensor:
        """``[c, s, N_t]`` the scores of each group's rows (``groups`` ``[c, s]`` row indices,
        -1 padded; padded rows' scores are meaningless) by the fit without that group's rows."""
        idx = torch.from_numpy(groups)
        (c, s), real, safe = idx.shape, idx >= 0, idx.clamp(min=0)
        block = torch.where(real[:, :, None] & real[:, None, :], g[safe[:, :, None], safe[:, None, :]],
                            torch.eye(s, dtype=g.dtype))  # [c, s, s]: padded rows are decoupled
        rows = safe.reshape(-1).numpy()
        gy = torch.from_numpy(np.ascontiguousarray((self.yt @ g[rows].numpy().T).T)).reshape(c, s, -1)
        y = torch.from_numpy(self.y[rows].toarray()).to(g.dtype).reshape(c, s, -1)
        return y - torch.linalg.solve(block, gy.to(g.dtype))

    def factorized(self, alpha: np.ndarray, v: np.ndarray, weights: dict[str, float]) -> np.ndarray:
        """Validation NDCG@10 of the reduced-rank fit ``(alpha, V)`` (:func:`factorize`): the
        model that is saved."""
        return self.ndcg((_combine(self.kvf, weights) @ alpha) @ v.T)

    def ndcg(self, scores: np.ndarray) -> np.ndarray:
        """``[V]`` NDCG@10 of each validation user from ``scores [V, N_t]`` (rows in their order)."""
        from multimodal_interest.evaluate import evaluate

        scores, row = torch.from_numpy(scores), {int(u): i for i, u in enumerate(self.users)}
        return evaluate(lambda us: scores[[row[int(u)] for u in us]], self.task, self.users, ks=(10,)).values["ndcg@10"]


def _ndcg10(scores: torch.Tensor, truth: sp.csr_matrix, seen: sp.csr_matrix | None) -> np.ndarray:
    """``[R]`` NDCG@10 of each row of ``scores`` ``[R, N]`` against the items of ``truth``
    ``[R, N]``, the items of ``seen`` not ranked; NaN for a row with no truth."""
    if seen is not None and seen.nnz:
        coo = seen.tocoo()
        scores[torch.from_numpy(coo.row), torch.from_numpy(coo.col)] = -torch.inf
    k = min(10, scores.shape[1])
    top = torch.topk(scores, k, dim=1).indices
    relevant = torch.from_numpy(truth.toarray() > 0)
    discounts = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))
    ideal = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(discounts, 0)])
    dcg = relevant.gather(1, top).double() @ discounts
    return (dcg / ideal[relevant.sum(1).clamp(max=k)]).numpy()  # 0 / 0: NaN


def _combine(blocks: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    out = None
    for b, k in blocks.items():
        if weights.get(b, 0.0) > 0:
            out = k * weights[b] if out is None else out + k * np.float32(weights[b])
    if out is None:
        raise ValueError("every block has weight 0")
    return np.array(out, dtype=np.float32)


def search(validate, blocks: list[str]) -> tuple[Trial, list[Trial]]:
    """``(best, every trial in order)``: the settings tried (see the module docstring), each
    step taken only when it :meth:`~Trial.beats` the best so far."""
    trials: list[Trial] = []

    def trial(lam: float, weights: dict[str, float]) -> Trial:
        for t in trials:
            if t.lam == lam and t.weights == weights:
                return t
        valid, left_out = validate(lam, weights)
        t = Trial(lam, dict(weights), valid, left_out=left_out)
        trials.append(t)
        log.info("closed form: lam %g, weights %s: NDCG@10 validation %.4f, fit users left out %.4f",
                 lam, weights, t.valid_ndcg10, float(left_out.mean()) if len(left_out) else float("nan"))
        return t

    ones = {b: 1.0 for b in blocks}
    best = max((trial(lam, ones) for lam in LAMBDAS), key=lambda t: float(t.held_out.mean()))
    for b in blocks:
        for step in WEIGHT_STEPS:
            w = dict(best.weights, **{b: best.weights[b] * step})
            if b == CONST and step == 0:
                continue  # the intercept stays: it is the prior an empty history gets
            t = trial(best.lam, w)
            if t.beats(best):
                best = t
    for lam in (best.lam / 3, best.lam * 3):
        t = trial(lam, best.weights)
        if t.beats(best):
            best = t
    return best, trials


def factorize(kff: dict, y: sp.csr_matrix, lam: float, weights: dict[str, float],
              rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alpha [n, r], V [N_t, r])`` of the reduced-rank kernel ridge fit: ``V`` the top
    ``r`` right singular vectors of the fitted scores ``K G Y = Y - lam G Y``, ``alpha = G Y V``
    (``G = (K + lam I)^-1``; float32)."""
    k = _combine(kff, weights)
    k[np.diag_indices_from(k)] += lam
    g = torch.cholesky_inverse(torch.linalg.cholesky(torch.from_numpy(k))).numpy()
    gy = np.ascontiguousarray((sp.csr_matrix(y.T, dtype=np.float32) @ g).T)  # [n, N_t] (G symmetric)
    fitted = torch.from_numpy(y.toarray().astype(np.float32) - lam * gy)
    if rank >= min(fitted.shape):
        v = torch.linalg.svd(fitted, full_matrices=False)[2].T[:, :rank]
    else:
        torch.manual_seed(0)
        v = torch.svd_lowrank(fitted, q=min(rank + 16, min(fitted.shape)), niter=6)[2]
        v = torch.linalg.qr(v[:, :rank])[0]
    v = v.numpy()
    return gy @ v, v


def build_linear_model(task: ColdStartTask, features: ItemFeatures, config: TrainConfig, feat: Featurizer,
                       fit: Rows, scale: dict[str, float], weights: dict[str, float],
                       alpha: np.ndarray, v: np.ndarray) -> InterestModel:
    """The :class:`~fusion.InterestModel` whose scores are the factorized fit's."""
    from dataclasses import replace

    src, tgt = task.source, task.target
    settings = replace(config.model, kind="linear", dim=alpha.shape[1] if config.model.dim is None else config.model.dim)
    fusion = settings.fusion_config(features.dims, task.platforms, {src: task.n_items[src]})
    D = fusion.dim
    head = replace(settings, adapter="identity", item_bias=False, temperature=1.0, learn_temperature=False)
    targets = {tgt: head.target_config(task.n_items[tgt], space="learned")}
    model = InterestModel(InterestConfig(fusion, targets), features.fingerprints, info={"task": task_identity(task)})

    def coef(b: str) -> np.ndarray:  # [F_b, D]
        c = weights.get(b, 0.0) * scale.get(b, 0.0)
        z = fit.blocks[b]
        a = (z.T @ alpha) * c if c > 0 else np.zeros((z.shape[1], alpha.shape[1]))
        return np.pad(np.asarray(a), ((0, 0), (0, D - alpha.shape[1])))

    table = coef(IDS)
    if TOKENS in fit.blocks:
        table = table + feat.tokens @ coef(TOKENS)
    lin = model.fusion
    with torch.no_grad():
        lin.items.ids[src].weight.copy_(torch.from_numpy(table))
        lin.const.copy_(torch.from_numpy(coef(CONST)[0]))
        for m in features.dims:
            proj = lin.items.proj[m]
            if m in feat.whiten:
                mu, w = feat.whiten[m]
                proj.weight[0].copy_(torch.from_numpy(w @ coef(m)))
                proj.whiten[0].copy_(torch.from_numpy(mu))
            else:  # the source platform has no item of this modality
                proj.weight.zero_()
        model.spaces[tgt].learned.copy_(torch.from_numpy(np.pad(v, ((0, 0), (0, D - v.shape[1])))))
    model.set_id_presence(src, torch.from_numpy(feat.table_present))
    features.attach(model, task.platforms)
    return model


def fit_closed_form(task: ColdStartTask, features: ItemFeatures, config: TrainConfig,
                    lam: float | None = None, weights: dict[str, float] | None = None) -> FitResult:
    """Fit the linear model on ``task`` (see the module docstring). ``lam`` and ``weights``
    (block -> weight), when given, are used as they are instead of searched."""
    from multimodal_interest.training.scoring import valid_ndcg10

    t0 = time.perf_counter()
    users, bags, y = fit_rows(task, config.model.max_len, config.seed)
    if len(users) == 0:
        raise ValueError(f"{task.label}: no training user has items on both {task.source} and "
                         f"{task.target}; nothing teaches the mapping")
    feat = Featurizer(task, features, bags)
    fit = feat.rows(users, bags)
    h = task.source_histories(task.valid_users, config.model.max_len)
    valid = feat.rows(task.valid_users, _bags(h.items, h.mask, task.n_items[task.source]))
    kff, kvf, scale = block_kernels(fit, valid)
    log.info("closed form: %d fit users, %d validation users, blocks %s", len(users), len(task.valid_users),
             {b: fit.blocks[b].shape[1] for b in kff})
    validate = Validator(task, kff, kvf, y, task.valid_users, users, bags)
    rank = min(config.model.dim or DEFAULT_DIMS["linear"], y.shape[1], len(users))
    if lam is not None or weights is not None:
        w = {b: 1.0 for b in kff} if weights is None else {b: float(weights.get(b, 0.0)) for b in kff}
        best = Trial(LAMBDAS[3] if lam is None else lam, w, np.full(1, np.nan), rank)
        trials = [best]
        alpha, v = factorize(kff, y, best.lam, best.weights, rank)
    else:
        searched, trials = search(validate, list(kff))
        # the saved model keeps the fit's top `rank` directions; a larger lam smooths the fit,
        # which a low rank may keep better: lam is chosen again for the model that is saved
        chosen = None
        for factor in RANK_LAMBDAS if rank < min(y.shape[1], len(users)) else (1.0,):
            alpha, v = factorize(kff, y, searched.lam * factor, searched.weights, rank)
            t = Trial(searched.lam * factor, searched.weights, validate.factorized(alpha, v, searched.weights), rank=rank)
            log.info("closed form: lam %g at rank %d: validation NDCG@10 %.4f", t.lam, rank, t.valid_ndcg10)
            trials.append(t)
            if chosen is None or t.beats(chosen[0]):
                chosen = (t, alpha, v)
        best, alpha, v = chosen
    model = build_linear_model(task, features, config, feat, fit, scale, best.weights, alpha, v)
    score = valid_ndcg10(model, task, task.valid_users, config.eval_batch_size)
    return FitResult(model, trials, best, score, time.perf_counter() - t0)


def train_linear(task: ColdStartTask, features: ItemFeatures, config: TrainConfig, output_dir: str | Path,
                 resume: bool = True):
    """``train`` for ``config.model.kind == "linear"``: fit, save the run (config, task, the
    trials in the log, the model), return a TrainResult. The fit takes minutes and has no
    checkpoints: a killed one is re-run whole. A folder holding a run with other settings is
    refused unless ``resume`` is False (its checkpoints are then deleted)."""
    from multimodal_interest.training.trainer import TrainResult

    run = Run(output_dir)
    if resume and run.config_file.is_file() and run.config(TrainConfig) != config:
        raise ValueError(f"{run.folder} holds a run with other settings; give another --output, or "
                         f"--no-resume to replace it")
    if not resume:
        shutil.rmtree(run.checkpoints, ignore_errors=True)
    run.folder.mkdir(parents=True, exist_ok=True)
    run.save_config(config)
    run.save_task(task_identity(task))
    result = fit_closed_form(task, features, config)
    history = [t.row() for t in result.trials]
    history.append({"chosen": result.best.row(), "rank": int(result.model.spaces[task.target].learned.shape[1]),
                    "valid_ndcg10": result.valid_ndcg10, "seconds": round(result.seconds, 2)})
    run.save_log(history)
    run.save_model(result.model)
    return TrainResult(result.model, 1, result.valid_ndcg10, 1, result.seconds, result.seconds, history)
