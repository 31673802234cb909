"""The names of the feature blocks (see :mod:`.features`); a modality's block is its own name.
The tokens block's name is the content head's (:mod:`fusion.content`), which reads it back."""
from __future__ import annotations

from fusion.content import TOKENS

IDS, COOC, CONST = "ids", "cooc", "const"

__all__ = ["CONST", "COOC", "IDS", "TOKENS"]
