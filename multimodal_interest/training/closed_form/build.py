"""The chosen fit as an :class:`~fusion.InterestModel`: each block's coefficients
``A_b = w_b s_b^2 Z_b^T alpha`` ``[F_b, r]`` (``Z_b`` the rows that carry ``alpha``: the fit rows,
or the landmarks) baked into the linear fusion: the source platform's item table (ids and
tokens, both root-n pooled), each modality's projection ``(x - mu_m) W_m A_m`` and the constant;
the target's learned item vectors are ``V``. Then ``u . V`` is the fit's scores projected on
its top ``r`` directions."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from fusion import InterestConfig, InterestModel
from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.training.closed_form.features import COOC, CONST, IDS, TOKENS, Featurizer, Rows
from multimodal_interest.training.config import TrainConfig
from multimodal_interest.training.features import ItemFeatures
from multimodal_interest.training.record import task_identity


def build_linear_model(task: ColdStartTask, features: ItemFeatures, config: TrainConfig, feat: Featurizer,
                       carriers: Rows, scale: dict[str, float], weights: dict[str, float],
                       alpha: np.ndarray, v: np.ndarray) -> InterestModel:
    """The model whose scores are ``k(z, carriers) alpha V^T`` (``alpha [R, r]``, ``V [N_t, r]``)."""
    src, tgt = task.source, task.target
    settings = replace(config.model, kind="linear", dim=alpha.shape[1] if config.model.dim is None else config.model.dim)
    fusion = settings.fusion_config(features.dims, task.platforms, {src: task.n_items[src]})
    width = fusion.dim
    head = replace(settings, adapter="identity", item_bias=False, temperature=1.0, learn_temperature=False)
    targets = {tgt: head.target_config(task.n_items[tgt], space="learned")}
    model = InterestModel(InterestConfig(fusion, targets), features.fingerprints, info={"task": task_identity(task)})

    def coef(b: str) -> np.ndarray:  # [F_b, width]
        c = weights.get(b, 0.0) * scale.get(b, 0.0)
        z = carriers.blocks[b]
        a = (z.T @ alpha) * c if c > 0 else np.zeros((z.shape[1], alpha.shape[1]))
        return np.pad(np.asarray(a), ((0, 0), (0, width - alpha.shape[1])))

    table = coef(IDS)
    if TOKENS in carriers.blocks:
        table = table + feat.tokens @ coef(TOKENS)
    if COOC in carriers.blocks:
        table = table + feat.cooc @ coef(COOC)
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
        model.spaces[tgt].learned.copy_(torch.from_numpy(np.pad(v, ((0, 0), (0, width - v.shape[1])))))
    model.set_id_presence(src, torch.from_numpy(feat.table_present))
    features.attach(model, task.platforms)
    return model
