"""``mmi fetch NAME``: fetch (or import from a local folder) a registered dataset, once."""
from __future__ import annotations

import argparse

from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.registry import get_dataset
from multimodal_interest.data.stats import format_stats


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="a registered dataset (see `mmi datasets`)")
    parser.add_argument("--root", help="dataset cache (default: $MMI_CACHE or "
                                       "~/.cache/multimodal-interest/datasets)")
    parser.add_argument("--from-dir", help="take the raw files from this folder (laid out like "
                                           "the shared data folder) instead of downloading")


def run(args: argparse.Namespace) -> int:
    path = get_dataset(args.name, args.root, args.from_dir)
    print(f"{path}\n")
    print(format_stats(CrossPlatformDataset.load(path).stats()))
    return 0
