"""Training the fusion model with accelerate: config, batches, objectives, the loop."""
from __future__ import annotations

from multimodal_interest.training.config import TrainConfig
from multimodal_interest.training.features import ItemFeatures
from multimodal_interest.training.model import add_platform, attach_features, build_model, load_run
from multimodal_interest.training.scoring import ModelScorer, valid_ndcg10
from multimodal_interest.training.trainer import TrainResult, train

__all__ = ["ItemFeatures", "ModelScorer", "TrainConfig", "TrainResult", "add_platform", "attach_features",
           "build_model", "load_run", "train", "valid_ndcg10"]
