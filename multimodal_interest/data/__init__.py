"""Datasets: the on-disk format, loading with validation, importers, splits and histories."""
from __future__ import annotations

from multimodal_interest.data.task import ColdStartTask, Histories, build_histories

__all__ = ["ColdStartTask", "Histories", "build_histories"]
