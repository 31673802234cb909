"""Block kernels: ``K_b = s_b^2 Z_b Z_b'^T`` per feature block, and their weighted sum.

Each block is scaled to mean squared norm 1 over the fit rows (``s_b^2 = 1 / mean ||z_b||^2``)
so that a weight means the same for every block; the kernel is ``K = sum_b w_b K_b``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from multimodal_interest.training.closed_form.features import Rows


def block_scales(fit: Rows) -> dict[str, float]:
    """``s_b^2`` of each block that is nonzero on some fit row (the others are left out)."""
    scale = {}
    for b, z in fit.blocks.items():
        sq = float(z.multiply(z).sum() if sp.issparse(z) else (z * z).sum()) / max(z.shape[0], 1)
        if sq > 0:
            scale[b] = 1.0 / sq
    return scale


def cross_kernels(a: Rows, b: Rows, scale: dict[str, float]) -> dict[str, np.ndarray]:
    """Per block of ``scale``: ``s_b^2 Z_b(a) Z_b(b)^T`` ``[R_a, R_b]`` float32."""
    out = {}
    for blk, s in scale.items():
        za, zb = a.blocks[blk], b.blocks[blk]
        k = gram(za, zb) if sp.issparse(za) else za @ zb.T
        out[blk] = (k * s).astype(np.float32)
    return out


def gram(a: sp.csr_matrix, b: sp.csr_matrix, chunk: int = 2048) -> np.ndarray:
    """``a @ b.T`` as a dense float64 array ``[R_a, R_b]``, ``b``'s rows a chunk at a time."""
    if not b.shape[0]:
        return np.zeros((a.shape[0], 0))
    bt = sp.csc_matrix(b.T)
    return np.concatenate([(a @ bt[:, i:i + chunk]).toarray() for i in range(0, bt.shape[1], chunk)], 1)


def combine(blocks: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """``sum_b w_b K_b`` (float32, a new array) over the blocks of positive weight."""
    out = None
    for b, k in blocks.items():
        w = np.float32(weights.get(b, 0.0))
        if w > 0:
            out = k * w if out is None else out + k * w
    if out is None:
        raise ValueError("every block has weight 0")
    return np.array(out, dtype=np.float32)
