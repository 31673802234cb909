"""The training losses, in one module so that one forward call computes the whole step
(what DDP needs when two objectives share parameters)."""
from __future__ import annotations

import torch
from torch import nn

from fusion import InterestModel


def multi_positive_softmax_loss(logits: torch.Tensor, pos_rows: torch.Tensor,
                                pos_cols: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy where row ``b``'s label is spread evenly over its positives.

    ``logits [B, C]``; positives given as pairs ``(pos_rows [P], pos_cols [P])``; every row
    needs at least one. Mean over rows of ``logsumexp(logits_b) - mean_{c in pos(b)} logits_bc``.
    """
    B = logits.shape[0]
    count = torch.bincount(pos_rows, minlength=B).to(logits.dtype)
    pos_sum = torch.zeros(B, dtype=logits.dtype, device=logits.device).index_add(
        0, pos_rows, logits[pos_rows, pos_cols])
    return (logits.float().logsumexp(1) - pos_sum.float() / count.float()).mean()


class Objective(nn.Module):
    """cross loss + ``within_weight`` x within loss, from one batch of
    :meth:`~multimodal_interest.training.batches.BatchPlanner.build`."""

    def __init__(self, model: InterestModel, source: str, target: str, within_weight: float,
                 num_negatives: int | None):
        super().__init__()
        self.model, self.source, self.target = model, source, target
        self.within_weight, self.num_negatives = within_weight, num_negatives

    def _logits(self, u: torch.Tensor, platform: str,
                positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits over the candidates and the positives' columns among them: every item of
        ``platform`` (full softmax), or the positives plus ``num_negatives`` uniform ones."""
        if self.num_negatives is None:
            return self.model.logits(u, platform), positives
        n = self.model.config.targets[platform].n_items
        negatives = torch.randint(n, (self.num_negatives,), device=positives.device)
        candidates = torch.unique(torch.cat([positives, negatives]))
        return self.model.logits(u, platform, candidates), torch.searchsorted(candidates, positives)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        u = self.model.encode_users(batch["src_items"], batch["src_mask"], self.source)
        logits, cols = self._logits(u, self.target, batch["pos_items"])
        cross = multi_positive_softmax_loss(logits, batch["pos_rows"], cols)
        out = {"cross": cross.detach(), "loss": cross}
        if batch.get("within_platform") is not None and self.within_weight > 0:
            p, target = batch["within_platform"], batch["w_target"]
            w = self.model.encode_users(batch["w_items"], batch["w_mask"], p)
            logits, cols = self._logits(w, p, target)
            within = multi_positive_softmax_loss(logits, torch.arange(len(target), device=target.device), cols)
            out["within"] = within.detach()
            out["loss"] = cross + self.within_weight * within
        return out
