"""``mmi validate DATASET``: check a dataset folder; print every problem, or its statistics."""
from __future__ import annotations

import argparse
import json

from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.errors import DatasetError
from multimodal_interest.data.registry import resolve
from multimodal_interest.data.stats import format_stats


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset folder, or the name of a registered dataset")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")


def run(args: argparse.Namespace) -> int:
    try:
        dataset = CrossPlatformDataset.load(resolve(args.dataset))
        for name in dataset.splits():
            dataset.split(name)
    except DatasetError as exc:  # every problem, not just the first 40 of the message
        print("\n".join([str(exc).splitlines()[0]] + [f"  {p}" for p in exc.problems]))
        return 1
    stats = dataset.stats()
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0
