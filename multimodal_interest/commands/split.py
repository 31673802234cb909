"""``mmi split DATASET``: save user-wise cold-start splits (all standard ones by default), or
one split of given users (``--valid-users`` / ``--test-users``). With protocol options
(``--overlap-fraction``, ``--cold-items``), each split is saved under its name plus the
protocol's tag (``cold20_seed900+overlap0.05-seed0``) with the protocol in its JSON meta, and
``mmi train`` / ``mmi evaluate`` on that split apply it."""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from multimodal_interest.commands import _protocol
from multimodal_interest.data.dataset import CrossPlatformDataset
from multimodal_interest.data.registry import resolve
from multimodal_interest.data.splits import (RATIOS, SEEDS, VALID_RATIO, Split, given_split, random_split,
                                             save_split)


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
    given = parser.add_argument_group("a split of given users (instead of random ones)")
    given.add_argument("--valid-users", type=Path, metavar="FILE",
                       help="the valid users: .txt of one user id per line, or a table with "
                            "user_id and an optional target (a platform or '*')")
    given.add_argument("--test-users", type=Path, metavar="FILE", help="the test users, as above")
    given.add_argument("--name", default="given", help="the given split's name (default: given)")
    _protocol.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    protocol = _protocol.single(args)
    dataset = CrossPlatformDataset.load(resolve(args.dataset))
    if args.valid_users or args.test_users:
        lists = {role: path for role, path in (("valid", args.valid_users), ("test", args.test_users))
                 if path is not None}
        splits = [given_split(args.name, lists, pd.Index(dataset.user_ids, dtype="str"),
                              dataset.platforms)]
    else:
        splits = [random_split(dataset, ratio, seed, args.valid_ratio)
                  for ratio in args.ratio for seed in args.seed]
    if not protocol.is_identity:
        splits = [Split(s.name + protocol.tag(), s.users, {**s.meta, "protocol": protocol.to_meta()})
                  for s in splits]
    for split in splits:
        path = save_split(dataset.root, split)
        counts = split.counts()
        among = (f"of {split.meta['overlapping_users']} overlapping users"
                 if "overlapping_users" in split.meta else "users")
        print(f"{path}: {counts['test']} test, {counts['valid']} valid {among}")
    return 0
