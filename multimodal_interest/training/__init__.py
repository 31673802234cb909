"""Training the fusion model with accelerate: config, batches, objectives, the loop."""
from __future__ import annotations

from multimodal_interest.training.config import TrainConfig
from multimodal_interest.training.features import ItemFeatures
from multimodal_interest.training.trainer import ModelScorer, TrainResult, build_model, train

__all__ = ["ItemFeatures", "ModelScorer", "TrainConfig", "TrainResult", "build_model", "train"]
