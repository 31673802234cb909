"""The chosen fit as an :class:`~fusion.InterestModel`: each block's coefficients
``A_b = w_b s_b^2 Z_b^T alpha`` ``[F_b, r]`` (``Z_b`` the rows that carry ``alpha``: the fit rows,
or the landmarks) baked into the linear fusion: the source platform's item table (ids and
tokens, both root-n pooled), each modality's projection ``(x - mu_m) W_m A_m`` and the constant;
the target's learned item vectors are ``V``. Then ``u . V`` is the fit's scores projected on
its top ``r`` directions. A content blend (:mod:`.blend`), when chosen, adds its columns after
the fit's."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from fusion import InterestConfig, InterestModel
from multimodal_interest.data.task import ColdStartTask
from multimodal_interest.training.closed_form.blend import ContentColumns
from multimodal_interest.training.closed_form.features import COOC, CONST, IDS, TOKENS, Featurizer, Rows
from multimodal_interest.training.config import TrainConfig
from multimodal_interest.training.features import ItemFeatures
from multimodal_interest.training.record import task_identity


def build_linear_model(task: ColdStartTask, features: ItemFeatures, config: TrainConfig, feat: Featurizer,
                       carriers: Rows, scale: dict[str, float], weights: dict[str, float],
                       alpha: np.ndarray, v: np.ndarray, columns: ContentColumns | None = None) -> InterestModel:
    """The model whose scores are ``k(z, carriers) alpha V^T`` (``alpha [R, r]``, ``V [N_t, r]``),
    plus the content blend's ``columns`` when given."""
    src, tgt = task.source, task.target
    r = alpha.shape[1] if config.model.dim is None else config.model.dim  # the fit's columns
    extra = 0 if columns is None else columns.target.shape[1]
    settings = replace(config.model, kind="linear", dim=r + extra)
    fusion = settings.fusion_config(features.dims, task.platforms, {src: task.n_items[src]})
    head = replace(settings, adapter="identity", item_bias=False, temperature=1.0, learn_temperature=False)
    targets = {tgt: head.target_config(task.n_items[tgt], space="learned")}
    model = InterestModel(InterestConfig(fusion, targets), features.fingerprints, info={"task": task_identity(task)})

    def coef(b: str) -> np.ndarray:  # [F_b, r]
        c = weights.get(b, 0.0) * scale.get(b, 0.0)
        z = carriers.blocks[b]
        a = (z.T @ alpha) * c if c > 0 else np.zeros((z.shape[1], alpha.shape[1]))
        return np.pad(np.asarray(a), ((0, 0), (0, r - alpha.shape[1])))

    table = coef(IDS)
    if TOKENS in carriers.blocks:
        table = table + feat.tokens @ coef(TOKENS)
    if COOC in carriers.blocks:
        table = table + feat.cooc @ coef(COOC)
    const, items, present = coef(CONST)[0], np.pad(v, ((0, 0), (0, r - v.shape[1]))), feat.table_present
    if columns is not None:  # the blend's columns after the fit's; its rows count in the table
        table, const = np.concatenate([table, columns.source], 1), np.r_[const, columns.const]
        items = np.concatenate([items, columns.target], 1)
        present = present | (np.abs(columns.source).sum(1) > 0)
    lin = model.fusion
    with torch.no_grad():
        lin.items.ids[src].weight.copy_(torch.from_numpy(table))
        lin.const.copy_(torch.from_numpy(const))
        for m in features.dims:
            proj = lin.items.proj[m]
            if m in feat.whiten:
                mu, w = feat.whiten[m]
                proj.weight[0].copy_(torch.from_numpy(np.pad(w @ coef(m), ((0, 0), (0, extra)))))
                proj.whiten[0].copy_(torch.from_numpy(mu))
            else:  # the source platform has no item of this modality
                proj.weight.zero_()
        model.spaces[tgt].learned.copy_(torch.from_numpy(items))
    model.set_id_presence(src, torch.from_numpy(present))
    features.attach(model, task.platforms)
    return model
