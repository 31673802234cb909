"""Training the fusion model with accelerate: config, batches, objectives, the loop."""
from __future__ import annotations

from multimodal_interest.training.config import TrainConfig
from multimodal_interest.training.features import ItemFeatures
from multimodal_interest.training.trainer import TrainResult, build_model, score_users, train

__all__ = ["ItemFeatures", "TrainConfig", "TrainResult", "build_model", "score_users", "train"]
