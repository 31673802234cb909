"""What training returns, whichever way the model was fitted (gradient or closed form)."""
from __future__ import annotations

from dataclasses import dataclass

from fusion import InterestModel


@dataclass
class TrainResult:
    model: InterestModel  # the best model on validation
    best_epoch: int
    best_valid_ndcg10: float
    epochs_run: int
    seconds: float
    seconds_to_best: float
    history: list[dict]
