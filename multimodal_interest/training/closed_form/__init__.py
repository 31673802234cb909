"""The linear interest model, fitted in closed form: kernel ridge regression from what a
user's source history holds to their target items, every setting chosen on the run's
validation users. One module per job:

- :mod:`.rows`      who teaches the mapping: every fit row's history and targets
- :mod:`.blocks`    the feature blocks' names
- :mod:`.features`  a history's feature blocks (ids, tf-idf tokens, co-occurrence, whitened modalities, constant)
- :mod:`.cooc`      each platform's item co-occurrence among all its users (every user, one platform or two)
- :mod:`.kernels`   block kernels ``K_b``, scaled, and their weighted sum ``K = sum_b w_b K_b``
- :mod:`.validate`  a setting's NDCG@10 on validation users and on fit users left out
- :mod:`.search`    which settings are tried, when a step is taken, the search's optimism
- :mod:`.solve`     the chosen setting's exact reduced-rank solve, or the approximate one
- :mod:`.items`     the target items' content, and vectors for the items no fit row touched
- :mod:`.head`      that content map saved with the model, for items the catalog gains later
- :mod:`.zero_shot` no fit row at all (or a fit it beats on validation): scoring by content in a space both platforms share
- :mod:`.blend`     the fit's scores plus that content similarity, when validation says so
- :mod:`.build`     the solve baked into an :class:`~fusion.InterestModel`
- :mod:`.fit`       all of it in order, and the run folder

A user with features ``z`` scores the target items ``k(z) (K + lam I)^-1 Y``, projected on the
top ``r`` right singular vectors ``V`` of the fitted scores; the interest vector is
``k(z) alpha`` and the target's item vectors are ``V``.
"""
from __future__ import annotations

from multimodal_interest.training.closed_form.features import CONST, IDS, TOKENS, Featurizer, Rows
from multimodal_interest.training.closed_form.fit import FitResult, fit_closed_form, train_linear
from multimodal_interest.training.closed_form.kernels import block_scales, combine, cross_kernels
from multimodal_interest.training.closed_form.rows import FitRows, bags, fit_rows
from multimodal_interest.training.closed_form.search import Trial, optimism, search
from multimodal_interest.training.closed_form.validate import Validator, ndcg10

__all__ = ["CONST", "IDS", "TOKENS", "Featurizer", "FitResult", "FitRows", "Rows", "Trial", "Validator",
           "bags", "block_scales", "combine", "cross_kernels", "fit_closed_form", "fit_rows", "ndcg10",
           "optimism", "search", "train_linear"]
