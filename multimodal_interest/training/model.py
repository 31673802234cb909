"""The model a training run starts from, and the data it is given at run time.

Item features are data, not weights: :func:`attach_features` registers the store's item
features with a model, after building or loading it. Which items have a trained id embedding is the
model's own state: :func:`build_model` sets it from the training split
(:func:`set_id_presence`) and ``save_pretrained`` keeps it, so a saved model scores alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fusion import InterestConfig, InterestModel, TargetConfig
from fusion.config import HeadSettings
from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.training.config import TrainConfig
from multimodal_interest.training.features import ItemFeatures
from multimodal_interest.run import Run
from multimodal_interest.training.record import check_run_task, task_identity


def build_model(task: ColdStartTask, features: ItemFeatures, config: TrainConfig) -> InterestModel:
    """A fresh model for ``task``: heads for both platforms, the features registered, and an
    id embedding per platform used for items seen in training, when ``config.item_ids`` or
    when there are no content features (id-only data). A platform with its own item vectors
    (``features.item_spaces``) gets an external space: the adapter maps interests into it."""
    platforms = task.platforms
    ids = config.item_ids or not features.dims
    fusion = config.model.fusion_config(features.dims, platforms,
                                        {p: task.n_items[p] for p in platforms} if ids else {})
    targets = {p: config.model.target_config(task.n_items[p], **_space(features, p)) for p in platforms}
    model = InterestModel(InterestConfig(fusion, targets), features.fingerprints,
                          info={"task": task_identity(task)})
    set_id_presence(model, task, config.id_min_users)
    attach_features(model, task, features)
    for p in platforms:
        popularity_prior(model, task, p)
    return model


def _space(features: ItemFeatures, platform: str) -> dict:
    own = features.item_spaces.get(platform)
    return {} if own is None else {"space": "external", "external_dim": own.shape[1]}


def popularity_prior(model: InterestModel, task: ColdStartTask, platform: str) -> None:
    """Start ``platform``'s item bias at log(1 + training users per item), centred."""
    if model.spaces[platform].bias is not None:
        prior = torch.from_numpy(np.log1p(item_users(task, platform))).float()
        model.spaces[platform].bias.data.copy_(prior - prior.mean())


def add_platform(model: InterestModel, task: ColdStartTask, features: ItemFeatures,
                 adapter: str = HeadSettings.adapter) -> None:
    """Give ``model`` a head for ``task.target``, a platform it was not trained on: its items go
    through the trained projections (zero-shot, from the catalog alone), the adapter starts at
    the identity and the item bias at the task's popularity. Fine-tune only this head with
    ``train(..., init=model)`` and ``TrainConfig(trainable="target-head")``."""
    model.add_target(task.target, TargetConfig(task.n_items[task.target], adapter=adapter))
    attach_features(model, task, features)
    popularity_prior(model, task, task.target)


def freeze_all_but_target_head(model: InterestModel, target: str) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_(name.split(".")[:2] in (["adapters", target], ["item_adapters", target],
                                                 ["spaces", target]))


def attach_features(model: InterestModel, task: ColdStartTask, features: ItemFeatures) -> None:
    """Register both platforms' item features with ``model`` (and a target scored in its own
    item space its item vectors): :meth:`ItemFeatures.attach`. The model's id presence is its own
    and stays as it is."""
    features.attach(model, task.platforms)


def set_id_presence(model: InterestModel, task: ColdStartTask, id_min_users: int = 1) -> None:
    """Where ``model`` has id embeddings, only items of at least ``id_min_users`` training
    users of ``task`` use theirs (the others were never trained, or too little to trust)."""
    for p in task.platforms:
        if p in model.fusion.config.id_items:
            model.set_id_presence(p, torch.from_numpy(item_users(task, p) >= id_min_users))


def load_run(run_dir: str | Path, task: ColdStartTask, features: ItemFeatures) -> InterestModel:
    """The best model of a finished (or interrupted) run folder, ready to score ``task``; a run
    trained on another task (dataset, split, source or target) or on other encoders is refused."""
    run = Run(run_dir)
    check_run_task(run.folder, task)
    model = run.load_model(encoder_fingerprints=features.fingerprints)
    if not model.id_presence_recorded:  # saved by an older version: the run's config says
        set_id_presence(model, task, run.config(TrainConfig).id_min_users)
    attach_features(model, task, features)
    return model


def item_users(task: ColdStartTask, platform: str) -> np.ndarray:
    """``[n_items]`` number of distinct training users of each item of ``platform``."""
    rows = task.train.loc[task.train["platform"] == platform, ["user_idx", "item_idx"]].drop_duplicates()
    return np.bincount(rows["item_idx"].to_numpy(), minlength=task.n_items[platform])
