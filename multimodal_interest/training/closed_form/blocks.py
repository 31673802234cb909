"""The names of the feature blocks (see :mod:`.features`); a modality's block is its own name."""
from __future__ import annotations

IDS, TOKENS, COOC, CONST = "ids", "tokens", "cooc", "const"
