"""Baselines for cold-start transfer, each registered by name (see :mod:`.base`).

    from multimodal_interest.baselines import create_baseline, list_baselines, tune
"""
from __future__ import annotations

# importing each module registers its baselines
from multimodal_interest.baselines import cmf, emcdr, itemknn, popularity, ptupcdr  # noqa: F401
from multimodal_interest.baselines import attr2factor, bm25knn, ials  # noqa: F401
from multimodal_interest.baselines import ease, rp3beta, userknn  # noqa: F401
from multimodal_interest.baselines.base import (BASELINES, DEFAULT_BUDGET, MAX_GRID, Baseline, Tuned,
                                                create_baseline, judged_by, list_baselines, register_baseline,
                                                tune, tuning_settings)

__all__ = ["BASELINES", "DEFAULT_BUDGET", "MAX_GRID", "Baseline", "Tuned", "create_baseline", "judged_by",
           "list_baselines", "register_baseline", "tune", "tuning_settings"]
