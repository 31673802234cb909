"""The portable interest vector: a person's interests as a small JSON document.

A user's interest vector ``u`` (``[D]``, unit length; 0 for an empty history) is
platform-agnostic: any target head of the same model maps it into its item space. Exported
as this document, it lets a person carry their interests to another platform (another
deployment of the same model) without handing over their history::

    {"format": "multimodal-interest/interest-vector", "version": 1,
     "model": "sha256:...",             # fingerprint of the model that made it
     "dim": 128, "vector": [0.0123, ...],
     "created": "2026-12-01T10:00:00+00:00",
     "history": {"items": 37, "platforms": ["art"]}}   # counts only, never item ids

Reading refuses a document of another format or version, of another model (its
``fingerprint`` differs: a vector means nothing to another model's adapters), of the wrong
width, with a non-finite value, or of neither unit nor zero length. Values are written as
the float32 numbers they are, so a document read back gives the identical vector.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import torch

FORMAT = "multimodal-interest/interest-vector"
VERSION = 1
KEYS = ("format", "version", "model", "dim", "vector", "created", "history")
NORM_TOLERANCE = 1e-3


class InterestDocumentError(ValueError):
    """An interest document that this deployment cannot use; the message says why."""


def interest_document(u: torch.Tensor, model: str, history_items: int,
                      platforms: list[str]) -> dict[str, Any]:
    """The document of interest vector ``u [D]`` made by the model with fingerprint ``model``
    from a history of ``history_items`` items on ``platforms``."""
    return {"format": FORMAT, "version": VERSION, "model": model, "dim": int(u.numel()),
            "vector": [float(x) for x in u.detach().float().cpu().tolist()],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "history": {"items": int(history_items), "platforms": sorted(set(platforms))}}


def read_interest_document(doc: dict[str, Any] | str | bytes, model: str, dim: int) -> torch.Tensor:
    """The interest vector ``[dim]`` float32 of ``doc`` (a parsed document or its JSON text),
    checked against the fingerprint ``model`` and width ``dim`` of this deployment's model."""
    if isinstance(doc, (str, bytes)):
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError as e:
            raise InterestDocumentError(f"interest document: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise InterestDocumentError(f"interest document: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise InterestDocumentError(f"interest document: format {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise InterestDocumentError(f"interest document: version {doc.get('version')!r} is not supported "
                                    f"(this toolkit reads version {VERSION})")
    unknown, missing = sorted(set(doc) - set(KEYS)), [k for k in KEYS if k not in doc]
    if unknown or missing:
        raise InterestDocumentError(f"interest document: unknown field(s) {unknown}, missing {missing}")
    if doc["model"] != model:
        raise InterestDocumentError(f"interest document: made by model {doc['model']}, but this deployment "
                                    f"serves model {model}; an interest vector is only meaningful to "
                                    f"the model that made it (re-create it from the history here)")
    vector = doc["vector"]
    if not isinstance(doc["dim"], int) or doc["dim"] != dim:
        raise InterestDocumentError(f"interest document: dim {doc['dim']!r}, the model's is {dim}")
    if not isinstance(vector, list) or len(vector) != dim:
        n = len(vector) if isinstance(vector, list) else type(vector).__name__
        raise InterestDocumentError(f"interest document: vector must be a list of {dim} numbers, got {n}")
    bad = [i for i, x in enumerate(vector)
           if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x)]
    if bad:
        raise InterestDocumentError(f"interest document: vector[{bad[0]}] = {vector[bad[0]]!r} is not a "
                                    f"finite number ({len(bad)} such value(s))")
    u = torch.tensor(vector, dtype=torch.float32)
    norm = float(u.norm())
    if norm != 0.0 and abs(norm - 1.0) > NORM_TOLERANCE:
        raise InterestDocumentError(f"interest document: vector has length {norm:.4f}; interest vectors "
                                    f"are unit length (or 0 for an empty history)")
    return u
