"""``mmi recommend-batch --model BUNDLE --histories FILE --platform P --output DIR``: every
user of a histories file scored at once, locally or on Ray (``--engine ray``); the file's
layout, the output parts and resuming are :mod:`multimodal_interest.batch`'s."""
from __future__ import annotations

import argparse
from pathlib import Path

from multimodal_interest.batch import Settings, recommend_batch
from multimodal_interest.retrieval import KINDS


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="bundle folder (mmi export-index)")
    p.add_argument("--histories", type=Path, required=True,
                   help="CSV/TSV/Parquet: user_id, item_id [, platform] [, timestamp], grouped by user")
    p.add_argument("--platform", required=True, help="platform to recommend on")
    p.add_argument("--output", type=Path, required=True, help="folder of Parquet parts (created; rerun resumes)")
    p.add_argument("--source", help="platform of the item ids when the file has no platform column")
    p.add_argument("-k", "--k", type=int, default=10, help="items per user (default 10)")
    p.add_argument("--index", default="exact", choices=KINDS, help="retrieval (default exact)")
    p.add_argument("--explain", type=int, default=0, help="history items named per item (default 0: none)")
    p.add_argument("--include-seen", action="store_true", help="allow items the user already has")
    p.add_argument("--skip-unknown", action="store_true", help="leave unknown item ids out instead of "
                                                               "giving the user an error row")
    p.add_argument("--users-per-part", type=int, default=5000, help="users per output part (the unit of resume)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: a pool of scoring actors (docs/distributed.md)")
    p.add_argument("--ray-address", help="ray: the cluster to join (default: a local Ray on this machine)")
    p.add_argument("--ray-workers", type=int, help="ray: scoring actors (default: one per CPU)")


def run(args: argparse.Namespace) -> int:
    from multimodal_interest.bundle import Bundle

    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    if args.users_per_part < 1:
        raise ValueError(f"--users-per-part must be >= 1, got {args.users_per_part}")
    bundle = Bundle.load(args.model)  # checked here, once, before any worker starts
    bundle.target(args.platform)
    s = Settings(bundle.fingerprint, args.platform, args.k, args.source, args.index, args.explain,
                 args.include_seen, args.skip_unknown)
    del bundle
    summary = recommend_batch(args.model, args.histories, args.output, s, args.users_per_part,
                              args.engine, args.ray_address, args.ray_workers, args.progress)
    print(summary.format(args.output))
    return 0
