"""``mmi split DATASET``: save user-wise cold-start splits (all standard ones by default)."""
from __future__ import annotations

import argparse

from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.registry import resolve
from multimodal_interest.data.splits import RATIOS, SEEDS, VALID_RATIO, random_split, save_split


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset folder, or the name of a registered dataset")
    parser.add_argument("--ratio", type=float, nargs="+", default=list(RATIOS),
                        help="share(s) of overlapping users held out as test users "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, nargs="+", default=list(SEEDS),
                        help="seed(s) (default: %(default)s)")
    parser.add_argument("--valid-ratio", type=float, default=VALID_RATIO,
                        help="share of overlapping users held out as valid users "
                             "(default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    dataset = CrossPlatformDataset.load(resolve(args.dataset))
    for ratio in args.ratio:
        for seed in args.seed:
            split = random_split(dataset, ratio, seed, args.valid_ratio)
            path = save_split(dataset.root, split)
            counts = split.counts()
            print(f"{path}: {counts['test']} test, {counts['valid']} valid of "
                  f"{split.meta['overlapping_users']} overlapping users")
    return 0
