"""A tiny text encoder for tests: each text's vector computed from the text alone (no
weights, no download), deterministic across processes; subclasses say how (:meth:`vector`)."""
from __future__ import annotations

import torch

from encoders import Encoder


class HashTextEncoder(Encoder):
    """Text vectors of ``width`` from :meth:`vector`; an empty text is a bad item."""

    modality = "text"
    config_keys = ("width",)

    def __init__(self, width: int = 16, device=None):
        super().__init__(device="cpu")
        self.width = width
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # a parameter, so the encoder has a device

    @property
    def dim(self) -> int:
        return self.width

    def load_item(self, item):
        if not isinstance(item, str) or not item.strip():
            raise ValueError("empty text")
        return item

    def vector(self, text: str) -> torch.Tensor:
        """``[width]`` the text's vector."""
        raise NotImplementedError

    def collate(self, items):
        return torch.stack([self.vector(text) for text in items]) if items else torch.zeros(0, self.width)

    def forward(self, batch):
        return batch + self.dummy
