"""The target's item vectors from what the items are, for items the fit rows never touched.

Content of target item ``j``: ``c_j`` = [LSA of its tf-idf tokens (:data:`LSA_DIMS`, the basis
learned from every platform's texts), each modality's whitened vector], every block scaled to
mean squared norm 1 over every platform's items (:class:`ContentSpace`). A ridge map from content to learned
vectors over the touched items (Gantner et al., ICDM 2010),
``M = argmin sum_{j touched} |c_j M - V_j|^2 + mu |M|^2``, gives every item a content vector
``c_j M``; its vector is then ``s_j V_j + (1 - s_j) c_j M`` with ``s_j = n_j / (n_j + kappa)``,
``n_j`` the fit rows that hold it: an item nobody touched (``n_j = 0``) is scored by its content
alone, and ``kappa = 0`` keeps every touched item's learned vector as it is. The ridge map
shrinks (and an untouched item has no popularity to show), so ``c_j M`` is scaled by ``rho``.
Which blocks, ``mu``, ``rho`` and ``kappa`` are chosen on the validation users (:func:`choose`).
The map is saved with the model (:mod:`.head`) so that items added to the catalog after
training get ``rho c_j M`` too; where validation chose none, :func:`norm_matched` fits one.
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.training.closed_form.features import TOKENS, whitening
from multimodal_interest.training.closed_form.search import MIN_GAIN, STEP_SE, Trial
from multimodal_interest.training.features import ItemFeatures

log = logging.getLogger("multimodal_interest.training.closed_form")

LSA_DIMS = 256  # the tokens' content dimensions
MUS = (0.01, 0.1, 1.0)  # the map's ridge, times the mean diagonal of C^T C
SCALES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # the content vectors' length, times the map's (a ridge map shrinks them)
KAPPAS = (0.0, 1.0, 4.0)  # the learned vector's shrinkage towards the content one: s = n / (n + kappa)


class ContentSpace:
    """Items' content in one space shared by the task's platforms: ``blocks(p)[b]`` ``[N_p, d_b]``
    for block ``b`` (:data:`~.features.TOKENS`: the LSA of the tf-idf tokens, basis learned from
    every platform's texts; a modality: its vector whitened over every platform's items), 0
    where an item lacks it, every block scaled to mean squared norm 1 over all items."""

    def __init__(self, task: ColdStartTask, features: ItemFeatures, vectorizer):
        self._blocks: dict[str, dict[str, np.ndarray]] = {p: {} for p in task.platforms}
        self.whitening: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # modality -> (mu [d], W [d, d])
        self.scale: dict[str, float] = {}  # block -> the root mean square its vectors were divided by
        self.vectorizer, self.lsa = vectorizer, None  # the tokens block: tf-idf, then its LSA basis [k, V]
        texts = [p for p in task.platforms if p in features.texts]
        if vectorizer is not None and texts:
            from sklearn.decomposition import TruncatedSVD

            tok = {p: vectorizer.transform(features.texts[p]) for p in texts}
            every = sp.vstack(list(tok.values()))
            k = min(LSA_DIMS, min(every.shape) - 1)
            if k >= 1:
                lsa = TruncatedSVD(k, random_state=0).fit(every)
                self.lsa = lsa.components_
                for p in texts:
                    self._blocks[p][TOKENS] = lsa.transform(tok[p])
        modalities = {m for p in task.platforms for m in features.vectors.get(p, {})}
        for m in sorted(modalities):
            x, has = {}, {}
            for p in task.platforms:
                if m in features.vectors.get(p, {}):
                    x[p] = features.vectors[p][m].double().numpy()
                    has[p] = (features.present[p][m].numpy() if m in features.present.get(p, {})
                              else np.ones(len(x[p]), bool))
            mu, w = whitening(np.concatenate([x[p][has[p]] for p in x]))
            self.whitening[m] = (mu, w)
            for p in x:
                self._blocks[p][m] = np.where(has[p][:, None], (x[p] - mu) @ w, 0.0)
        for b in {b for blocks in self._blocks.values() for b in blocks}:
            parts = [blocks[b] for blocks in self._blocks.values() if b in blocks]
            sq = float(np.concatenate([(c * c).sum(1) for c in parts]).mean())
            self.scale[b] = float(np.sqrt(sq))
            for blocks in self._blocks.values():
                if b in blocks:
                    if sq > 0:
                        blocks[b] = blocks[b] / np.sqrt(sq)
                    else:
                        del blocks[b]

    def blocks(self, platform: str) -> dict[str, np.ndarray]:
        return self._blocks[platform]


class TargetContent:
    """``blocks[b]`` ``[N_t, d_b]`` the target items' content (:class:`ContentSpace`)."""

    def __init__(self, space: ContentSpace, target: str):
        self.space = space
        self.blocks = space.blocks(target)

    def content(self, blocks: tuple[str, ...]) -> np.ndarray:
        """``[N_t, F]`` the items' content ``c_j``: the ``blocks``' columns side by side."""
        return np.concatenate([self.blocks[b] for b in blocks], 1)

    def fit_map(self, v: np.ndarray, touched: np.ndarray, blocks: tuple[str, ...], mu: float) -> np.ndarray:
        """``M [F, r]``: the ridge map from the ``touched`` items' content to their vectors ``v``."""
        cw = self.content(blocks)[touched]
        a = cw.T @ cw
        a[np.diag_indices_from(a)] += mu * max(float(np.trace(a)) / len(a), 1e-12)
        return np.linalg.solve(a, cw.T @ v[touched])

    def mapped(self, v: np.ndarray, touched: np.ndarray, blocks: tuple[str, ...], mu: float) -> np.ndarray:
        """``[N_t, r]`` every item's content vector ``c_j M`` (``M`` fitted on the ``touched`` items)."""
        return self.content(blocks) @ self.fit_map(v, touched, blocks, mu)


@dataclass
class ContentMap:
    """``rho * c M``: the vectors of items the fit rows never touched, from their content."""

    blocks: tuple[str, ...]  # the content's blocks, in column order
    m: np.ndarray  # [F, r]
    mu: float
    rho: float
    chosen_by: str  # "validation", or "norm" (rho matches the touched items' mean squared length)

    def info(self) -> dict:
        return {"blocks": list(self.blocks), "mu": self.mu, "rho": self.rho, "rho_from": self.chosen_by}


def norm_matched(content: TargetContent, v: np.ndarray, touched: np.ndarray) -> ContentMap | None:
    """The map for items a catalog gains after training when validation chose none (the content
    path off): every block, the middle ridge, and ``rho`` that gives the touched items' content
    vectors ``rho c_j M`` the mean squared length of their learned ones, to three significant
    digits (None: no content, or fewer than two touched items)."""
    if not content.blocks or touched.sum() < 2:
        return None
    blocks = tuple(sorted(content.blocks))
    m = content.fit_map(v, touched, blocks, MUS[1])
    fitted = float((np.square(content.content(blocks)[touched] @ m)).sum(1).mean())
    target = float(np.square(v[touched]).sum(1).mean())
    if not fitted > 0 or not target > 0:
        return None
    return ContentMap(blocks, m, MUS[1], float(f"{np.sqrt(target / fitted):.3g}"), "norm")  # 3 digits: no float noise


def blend(v: np.ndarray, mapped: np.ndarray, counts: np.ndarray, kappa: float) -> np.ndarray:
    """``[N_t, r]`` ``s_j V_j + (1 - s_j) mapped_j``, ``s_j = n_j / (n_j + kappa)`` (1 for a
    touched item when ``kappa = 0``, 0 for an untouched one)."""
    s = counts / (counts + kappa) if kappa > 0 else (counts > 0).astype(float)
    return s[:, None] * v + (1 - s)[:, None] * mapped


@dataclass
class ContentChoice:
    v: np.ndarray  # [N_t, r] the item vectors chosen
    trial: Trial  # the chosen vectors' validation trial (``base`` when the content path is off)
    info: dict  # blocks, mu, kappa (or "off") and the validation figures behind them
    map: ContentMap | None = None  # the content map the untouched items' vectors came from (None: off)


def not_worse(trial: Trial, base: Trial) -> bool:
    """``trial`` loses no more to ``base`` than noise: the mean paired per-user difference is
    above minus :data:`~.search.STEP_SE` standard errors (and :data:`~.search.MIN_GAIN`)."""
    d = trial.users - base.users
    return float(d.mean()) >= -max(MIN_GAIN, STEP_SE * float(d.std(ddof=1)) / np.sqrt(len(d)))


def choose(content: TargetContent, v: np.ndarray, counts: np.ndarray, score: Callable[[np.ndarray], np.ndarray],
           cold: tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]] | None,
           base: Trial) -> tuple[ContentChoice, list[Trial]]:
    """The item vectors to keep: ``v`` as learned, or blended with a content map (see the module
    docstring). ``score(V')``: the validation users' NDCG@10 ``[V]`` on all their hidden items;
    ``cold`` (None: the task has no validation cold items): the same on their hidden cold items
    ranked among the cold items, and ranked over the whole catalog; ``base`` the trial of ``v``.

    With cold items, the blocks and ``mu`` are those that rank the cold items best among
    themselves, and ``(rho, kappa)`` those that rank them best over the whole catalog (then
    among themselves) without losing more than noise on every hidden item (:func:`not_worse`);
    without, ``(rho, kappa)`` must beat ``v`` on every hidden item (:meth:`~.search.Trial.beats`)."""
    touched = counts > 0
    if not content.blocks or touched.all() or touched.sum() < 2:
        return ContentChoice(v, base, {"content": "off", "why": "no content" if not content.blocks
                                 else "every target item is touched" if touched.all() else "too few touched items"}), []
    names = sorted(content.blocks)
    subsets = [s for r in range(1, len(names) + 1) for s in itertools.combinations(names, r)]
    trials: list[Trial] = []
    info: dict = {"untouched_items": int((~touched).sum())}
    blocks, mu = tuple(names), MUS[1]
    if cold is not None:  # the blocks and mu: the cold items among themselves
        among, over_all = cold
        best = None
        for b, m in itertools.product(subsets, MUS):
            value = float(np.nanmean(among(content.mapped(v, touched, b, m))))
            log.info("closed form: content map %s, mu %g: validation NDCG@10 among the cold items %.4f",
                     "+".join(b), m, value)
            if best is None or value > best[2]:
                best = (b, m, value)
        blocks, mu = best[:2]
        info["cold_among_cold_valid_ndcg10"] = round(best[2], 6)
        base_cold = float(np.nanmean(over_all(v)))
    m = content.fit_map(v, touched, blocks, mu)
    mapped = content.content(blocks) @ m
    chosen, chosen_v, setting, chosen_key = base, v, None, None
    base_key = (round(base_cold, 4), float(np.nanmean(among(v)))) if cold is not None else None
    for rho, kappa in itertools.product(SCALES, KAPPAS):
        vk = blend(v, rho * mapped, counts, kappa)
        t = Trial(base.lam, {**base.weights, **{f"content_{b}": 1.0 for b in blocks}}, score(vk), rank=base.rank,
                  path=f"content mu={mu:g} rho={rho:g} kappa={kappa:g}")
        trials.append(t)
        if cold is None:
            log.info("closed form: %s: validation NDCG@10 %.4f", t.path, t.valid_ndcg10)
            if t.beats(chosen):
                chosen, chosen_v, setting = t, vk, (rho, kappa)
            continue
        # the cold items over the whole catalog first, then among themselves (where the learned
        # vectors leave them tied at 0): a smaller scale that ranks them no worse is kept
        key = (round(float(np.nanmean(cold[1](vk))), 4), float(np.nanmean(among(vk))))
        log.info("closed form: %s: validation NDCG@10 %.4f, on the cold items over the catalog %.4f, "
                 "among themselves %.4f", t.path, t.valid_ndcg10, *key)
        gains = key[0] > base_key[0] + MIN_GAIN or (key[0] >= base_key[0] and key[1] > base_key[1] + MIN_GAIN)
        if gains and not_worse(t, base) and (chosen_key is None or key[0] > chosen_key[0]
                                             or (key[0] == chosen_key[0] and key[1] > chosen_key[1] + MIN_GAIN)):
            chosen, chosen_v, setting, chosen_key = t, vk, (rho, kappa), key
    info.update(blocks=list(blocks), mu=mu)
    if setting is None:
        return ContentChoice(v, base, {"content": "off", "why": "the content path did not pay on validation",
                                       **info}), trials
    info.update(content="on", rho=setting[0], kappa=setting[1])
    if chosen_key is not None:
        info["cold_valid_ndcg10"], info["cold_among_cold_chosen_valid_ndcg10"] = chosen_key[0], round(chosen_key[1], 6)
    return ContentChoice(chosen_v, chosen, info, ContentMap(blocks, m, mu, setting[0], "validation")), trials
