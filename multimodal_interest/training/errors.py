"""Errors whose remedy is another setting, given as data so that each caller says it in its
own terms (the library as ``resume=False``, ``mmi train`` as ``--no-resume``)."""
from __future__ import annotations

from typing import Any


class SettingsError(ValueError):
    """A refusal that other settings would avoid: ``settings`` maps each setting's name to the
    value that does (``{"resume": False}``, ``{"kind": "transformer"}``); the message names them
    as the library spells them."""

    def __init__(self, message: str, settings: dict[str, Any]) -> None:
        super().__init__(message)
        self.settings = dict(settings)
