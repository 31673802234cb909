"""A 2-D map of interest vectors: where a person sits among the users of the training data.

At export time a sample of users' interest vectors (each user's history on the model's
source platform) is projected onto its first two principal components (PCA); the bundle
keeps the points, the mean and the two components (``map.safetensors``: ``points [N, 2]``,
``mean [D]``, ``components [2, D]``, ``explained [2]``), so a new person's vector is projected
exactly as the sample was: ``(u - mean) @ components.T``. The map stores no user ids.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MIN_USERS = 3  # fewer vectors than this make no map


@dataclass
class UserMap:
    source: str  # the platform whose histories made the sample's vectors
    points: np.ndarray  # [N, 2] float32, the sample projected
    mean: np.ndarray  # [D] float32
    components: np.ndarray  # [2, D] float32, unit rows
    explained: np.ndarray  # [2] float32, share of the sample's variance along each axis

    @classmethod
    def fit(cls, vectors: np.ndarray, source: str) -> UserMap:
        """PCA of ``vectors [N, D]`` (N >= :data:`MIN_USERS`, D >= 2). Each axis' sign is
        fixed (its largest loading positive), so the same vectors always draw the same map."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or len(x) < MIN_USERS or x.shape[1] < 2:
            raise ValueError(f"a user map needs at least {MIN_USERS} vectors of width >= 2, got shape {x.shape}")
        mean = x.mean(0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        components = vt[:2] * np.sign(vt[:2][np.arange(2), np.abs(vt[:2]).argmax(1)])[:, None]
        variance = s ** 2
        explained = variance[:2] / variance.sum() if variance.sum() > 0 else np.zeros(2)
        out = cls(source, np.zeros((0, 2), np.float32), mean.astype(np.float32),
                  components.astype(np.float32), explained.astype(np.float32))
        out.points = out.project(vectors)
        return out

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors [N, D]`` (or one ``[D]``) -> map coordinates ``[N, 2]`` (or ``[2]``)."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"vectors of width {x.shape[-1]}; the map is of width {self.mean.shape[0]}")
        return ((x - self.mean) @ self.components.T.astype(np.float64)).astype(np.float32)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"points": torch.from_numpy(self.points), "mean": torch.from_numpy(self.mean),
                "components": torch.from_numpy(self.components), "explained": torch.from_numpy(self.explained)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], source: str, width: int, where: str) -> UserMap:
        """A map read back; its shapes checked against the model's interest width."""
        missing = {"points", "mean", "components", "explained"} - set(tensors)
        if missing:
            raise ValueError(f"{where}: no tensor(s) {sorted(missing)}")
        t = {k: v.float().numpy() for k, v in tensors.items()}
        shapes = {k: v.shape for k, v in t.items()}
        if (t["points"].ndim != 2 or t["points"].shape[1] != 2 or t["mean"].shape != (width,)
                or t["components"].shape != (2, width) or t["explained"].shape != (2,)):
            raise ValueError(f"{where}: tensor shapes {shapes}; expected points [N, 2], mean [{width}], "
                             f"components [2, {width}], explained [2]")
        return cls(source, t["points"], t["mean"], t["components"], t["explained"])


def sample_vectors(model, dataset, source: str, n: int, seed: int = 0) -> np.ndarray:
    """Interest vectors ``[M, D]`` (M <= n) of up to ``n`` random users active on ``source``,
    each from their ``source`` history as the model reads it (its window), zero vectors (no
    embeddable item) left out."""
    users = np.flatnonzero(dataset.active_users(source))
    users = np.sort(np.random.default_rng(seed).choice(users, min(n, len(users)), replace=False))
    out = []
    for start in range(0, len(users), 512):
        h = dataset.histories(source, users[start:start + 512], max_len=model.fusion.config.max_len)
        with torch.inference_mode():
            u = model.encode_users(h.items, h.mask, source).float()
        out.append(u[(u != 0).any(1)].numpy())
    return np.concatenate(out) if out else np.zeros((0, model.fusion.config.dim), np.float32)
