"""Datasets: the on-disk format, loading with validation, importers, splits and histories.

See ``docs/dataset_format.md``. The usual entry points:

>>> path = get_dataset("movielens-100k")                # or any dataset folder
>>> ds = CrossPlatformDataset.load(path)
>>> task = ds.cold_start("comedy", "drama", "cold20_seed900")
"""
from __future__ import annotations

from multimodal_interest.data.dataset import CrossPlatformDataset, ItemVectors
from multimodal_interest.data.errors import DatasetError, Problem
from multimodal_interest.data.importers import import_dataset, list_importers
from multimodal_interest.data.registry import get_dataset, list_datasets
from multimodal_interest.data.splits import Split, random_split, save_split
from multimodal_interest.data.task import ColdStartTask, Histories, build_histories

__all__ = ["ColdStartTask", "CrossPlatformDataset", "DatasetError", "Histories", "ItemVectors",
           "Problem", "Split", "build_histories", "get_dataset", "import_dataset",
           "list_datasets", "list_importers", "random_split", "save_split"]
