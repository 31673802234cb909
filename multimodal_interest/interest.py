"""The portable interest vector: a person's interests as a small JSON document.

A user's interest vector ``u`` (``[D]``, unit length; 0 for a transformer's empty history) is
platform-agnostic: any target head of the same model maps it into its item space. Exported
as this document, it lets a person carry their interests to another platform (another
deployment of the same model) without handing over their history::

    {"format": "multimodal-interest/interest-vector", "version": 1,
     "model": "sha256:...",             # fingerprint of the model that made it
     "dim": 128, "vector": [0.0123, ...],
     "created": "2026-12-01T10:00:00+00:00",
     "history": {"items": 37, "platforms": ["art"]}}   # counts only, never item ids

Every field is required, as :func:`interest_document` writes them all. Reading refuses a
document of another format or version (an integer, not ``true``), of another model (its
``fingerprint`` differs: a vector means nothing to another model's adapters), of the wrong
width, with a value float32 cannot hold (not a number, NaN, infinite, or beyond
``±3.4e38``), of neither unit nor zero length, with a ``created`` that is not an ISO-8601
date and time, or a ``history`` other than ``{"items": int >= 0, "platforms": [names]}``.
Every refusal is an :class:`InterestDocumentError` saying why. Values are written as the
float32 numbers they are, so a document read back gives the identical vector.
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
HISTORY_KEYS = ("items", "platforms")
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
    doc = _parse(doc)
    _check_header(doc)
    _check_model(doc, model, dim)
    _check_created(doc["created"])
    _check_history(doc["history"])
    u = _vector(doc["vector"], dim)
    norm = float(u.double().norm())
    if norm != 0.0 and abs(norm - 1.0) > NORM_TOLERANCE:
        raise InterestDocumentError(f"interest document: vector has length {norm:.4f}; interest vectors "
                                    f"are unit length (or 0 for an empty history)")
    return u


def _parse(doc: Any) -> dict[str, Any]:
    if isinstance(doc, (str, bytes)):
        try:
            doc = json.loads(doc)
        except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, an integer of > 4300 digits
            raise InterestDocumentError(f"interest document: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise InterestDocumentError(f"interest document: expected a JSON object, got {type(doc).__name__}")
    return doc


def _check_header(doc: dict[str, Any]) -> None:
    if doc.get("format") != FORMAT:
        raise InterestDocumentError(f"interest document: format {_show(doc.get('format'))}, expected {FORMAT!r}")
    if not _is_int(doc.get("version")) or doc["version"] != VERSION:
        raise InterestDocumentError(f"interest document: version {_show(doc.get('version'))} is not supported "
                                    f"(this toolkit reads version {VERSION})")
    unknown = sorted(str(k) for k in set(doc) - set(KEYS))
    missing = [k for k in KEYS if k not in doc]
    if unknown or missing:
        raise InterestDocumentError(f"interest document: unknown field(s) {unknown}, missing {missing}")


def _check_model(doc: dict[str, Any], model: str, dim: int) -> None:
    if doc["model"] != model:
        raise InterestDocumentError(f"interest document: made by model {_show(doc['model'])}, but this "
                                    f"deployment serves model {model}; an interest vector is only "
                                    f"meaningful to the model that made it (re-create it from the history here)")
    if not _is_int(doc["dim"]) or doc["dim"] != dim:
        raise InterestDocumentError(f"interest document: dim {_show(doc['dim'])}, the model's is {dim}")


def _check_created(created: Any) -> None:
    if isinstance(created, str):
        try:
            datetime.fromisoformat(created)
            return
        except ValueError:
            pass
    raise InterestDocumentError(f"interest document: created {_show(created)} is not an ISO-8601 date "
                                f"and time string (like '2026-12-01T10:00:00+00:00')")


def _check_history(history: Any) -> None:
    if not isinstance(history, dict) or set(history) != set(HISTORY_KEYS):
        raise InterestDocumentError(f"interest document: history must be {{\"items\": a count, "
                                    f"\"platforms\": [platform names]}}, got {_show(history)}")
    items, platforms = history["items"], history["platforms"]
    if not _is_int(items) or items < 0:
        raise InterestDocumentError(f"interest document: history.items must be an integer >= 0, "
                                    f"got {_show(items)}")
    if not isinstance(platforms, list) or not all(isinstance(p, str) and p for p in platforms):
        raise InterestDocumentError(f"interest document: history.platforms must be a list of platform "
                                    f"names, got {_show(platforms)}")


def _vector(values: Any, dim: int) -> torch.Tensor:
    """``values`` as float32 ``[dim]``, if each is a number float32 holds (finite, |x| <= 3.4e38)."""
    if not isinstance(values, list) or len(values) != dim:
        n = len(values) if isinstance(values, list) else type(values).__name__
        raise InterestDocumentError(f"interest document: vector must be a list of {dim} numbers, got {n}")
    u = torch.tensor([_as_float(x) for x in values], dtype=torch.float32)  # beyond float32: +-inf
    bad = torch.nonzero(~torch.isfinite(u)).flatten().tolist()
    if bad:
        raise InterestDocumentError(f"interest document: vector[{bad[0]}] = {_show(values[bad[0]])} is not "
                                    f"a finite number that float32 can hold ({len(bad)} such value(s))")
    return u


def _as_float(x: Any) -> float:
    """``x`` as a float; NaN when it is not a real number (a bool, a string, an int beyond float64)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return math.nan
    try:
        return float(x)
    except OverflowError:
        return math.nan


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _show(x: Any) -> str:
    """A short description of the document's value ``x`` for an error message."""
    if isinstance(x, dict):
        text = f"an object with field(s) {sorted(str(k) for k in x)}"
    elif isinstance(x, list):
        text = f"a list of {len(x)} value(s)"
    elif _is_int(x) and x.bit_length() > 64:
        text = f"an integer of about {int(x.bit_length() * math.log10(2)) + 1} digits"
    else:
        text = repr(x)
    return text if len(text) <= 80 else text[:77] + "..."
